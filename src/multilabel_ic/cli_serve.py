"""``multilabel-ic serve MODEL``: the model behind the SageMaker inference container contract (docs/serve.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .exceptions import UsageError

__all__ = ["add_serve_parser", "cmd_serve"]


def add_serve_parser(sub) -> None:
    from .serve.contract import DEFAULT_HOST, DEFAULT_PORT, MAX_BODY_BYTES

    s = sub.add_parser("serve", help="serve a model.tar.gz over HTTP with the SageMaker endpoint's contract "
                       "(GET /ping, POST /invocations), batching concurrent requests (docs/serve.md)")
    s.add_argument("model", help="the model.tar.gz (local training, a SageMaker job's download, attach), or its "
                   "s3:// URI (downloaded once to --cache-dir)")
    s.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (0.0.0.0: every interface, as in a "
                   "container)")
    s.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0: any free one)")
    s.add_argument("--runtime", choices=["torch", "onnxruntime", "openvino"], default="torch",
                   help="run the network with PyTorch, OpenVINO (the openvino extra) or ONNX Runtime (export extra)")
    s.add_argument("--precision", choices=["fp32", "int8", "bf16"], default="fp32",
                   help="with --runtime openvino/onnxruntime: int8 serves the export --precision int8 beside the "
                        "model, bf16 OpenVINO's bfloat16 hint (docs/export.md)")
    s.add_argument("--max-batch", type=int, default=32, help="most images run through the network together")
    s.add_argument("--max-delay-ms", type=float, default=5.0,
                   help="longest wait for requests still decoding to join a batch (a lone request never waits)")
    s.add_argument("--decode-threads", type=int, default=None, help="threads decoding images (default: the cores, "
                   "at most 8)")
    s.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES, help="larger bodies get 413 (SageMaker's "
                   "limit)")
    s.add_argument("--body-timeout", type=float, default=30.0, help="seconds a request body may take to arrive "
                   "(slower: 408)")
    s.add_argument("--header-timeout", type=float, default=10.0, help="seconds a request's headers may take to "
                   "arrive (slower: 408)")
    s.add_argument("--workers", type=int, default=1, help="server processes on the port, each with its own model and "
                   "batcher (default 1)")
    s.add_argument("--cache-dir", type=Path, default=None, help="where an s3:// model is downloaded (default "
                   "~/.cache/multilabel-ic/models)")
    s.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info",
                   help="info: one JSON access line per request (request id, status, latency, batch size)")


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve.server import serve

    model: str | Path = args.model
    if not args.model.startswith("s3://"):
        model = Path(args.model)
        if not model.is_file():
            raise UsageError(f"{args.model}: no such model.tar.gz; give the path of a trained model's artifact, or "
                             f"its s3:// URI.")
    if args.precision != "fp32":  # checked now, before the port is bound; the server loads the predictor later
        from .model.predictor import check_precision

        check_precision(args.runtime, args.precision)
    serve(model, host=args.host, port=args.port, runtime=args.runtime, max_batch=args.max_batch,
          max_delay_ms=args.max_delay_ms, decode_threads=args.decode_threads, max_body_bytes=args.max_body_bytes,
          body_timeout_s=args.body_timeout, header_timeout_s=args.header_timeout, workers=args.workers,
          cache_dir=args.cache_dir, precision=args.precision, log_level="warning" if args.quiet else args.log_level)
    return 0
