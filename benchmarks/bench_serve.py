"""The server under load (``multilabel-ic serve``), against the offline predictor of the same model in the same run.

    python benchmarks/bench_serve.py                          # ResNet-18 at 224 and at 64 px, 60 s per level
    python benchmarks/bench_serve.py --duration 3 --models 18:64   # a quick check that it all works

For each model (a ResNet of that depth and size with BatchNorm statistics like a trained one's, so probabilities
spread; randomly initialised otherwise) it starts the server in its own process on 127.0.0.1 and drives
``POST /invocations`` with one JPEG at each concurrency (default 1, 8, 32) for ``--duration`` seconds with wrk
(Debian's ``wrk``; a Lua script posts the JPEG's bytes), or with a Python client when wrk is absent
(``--generator python``). The offline predictor of the same model and runtime runs in this process
(``LocalPredictor.predict_batch`` of ``--batch`` JPEGs: images/s; ``predict`` of one JPEG: latency), in rounds
interleaved with the server's: each level's duration is cut into ``--rounds`` server rounds, each just after an
offline round, and the ratios are the medians of the paired rounds' ratios, so a change in the machine's load
(other processes share its cores) hits both sides of a pair alike. Per level: requests/s, p50/p99 latency, errors
(connection, timeouts and non-200 answers), the server's resident memory before and after, its mean batch size (from
``/metrics``), the CPU time per image of the server (its process, all threads) and of the offline predictor (the
ratio of the two holds much better than wall-time ratios when other processes load the machine), and the machine's
load average. Writes serve.json.

The load generator runs on the same machine and takes CPU from the server: the figures are a floor.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from _common import write

from multilabel_ic import Hyperparameters
from multilabel_ic.bench.local import trained_like_network
from multilabel_ic.images import encode_jpeg
from multilabel_ic.model.artifact import write_model_tar
from multilabel_ic.model.network import mxnet_state_dict
from multilabel_ic.model.predictor import LocalPredictor

WRK_SCRIPT = r"""
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = "image/jpeg"
wrk.headers["Accept"] = "application/json"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH_RESULT {"requests": %d, "duration_us": %d, "p50_ms": %.3f, "p99_ms": %.3f, ' ..
    '"mean_ms": %.3f, "connect_errors": %d, "read_errors": %d, "write_errors": %d, "non_200": %d, ' ..
    '"timeouts": %d}\n', summary.requests, summary.duration, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency.mean / 1000, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def make_model(folder: Path, layers: int, size: int) -> Path:
    hp = Hyperparameters(num_classes=5, num_training_samples=1000, num_layers=layers, image_shape=f"3,{size},{size}",
                         multi_label=1)
    args, aux = mxnet_state_dict(trained_like_network(hp))
    return write_model_tar(folder / f"resnet{layers}-{size}" / "model.tar.gz",
                           {1: ({k: v.numpy() for k, v in args.items()}, {k: v.numpy() for k, v in aux.items()})},
                           num_classes=5, num_layers=layers, image_shape=(3, size, size), multi_label=True)


def make_jpeg(size: int, seed: int = 0) -> bytes:
    """A photo-like JPEG a little larger than the network's input (smooth shapes and noise), as a client sends."""
    import cv2

    side = int(size * 1.15)
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 256, (side, side, 3), dtype=np.uint8), (0, 0), side / 40)
    img = np.clip(img.astype(np.int16) + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
    return encode_jpeg(img, quality=90)


class Offline:
    """The offline predictor of the model, measured a round at a time."""

    def __init__(self, artifact: Path, jpeg: bytes, runtime: str, batch: int):
        self.pred = LocalPredictor(artifact, runtime=runtime, device="cpu")
        self.jpeg, self.blobs = jpeg, [jpeg] * batch
        self.pred.predict_batch(self.blobs)  # warm-up
        self.pred.predict(jpeg)

    def batch_round(self) -> tuple[float, float]:
        """(images/s, CPU ms per image) of one ``predict_batch`` of the batch."""
        t0, c0 = time.perf_counter(), time.process_time()
        self.pred.predict_batch(self.blobs)
        return len(self.blobs) / (time.perf_counter() - t0), (time.process_time() - c0) * 1000 / len(self.blobs)

    def single_round(self, n: int) -> tuple[float, float]:
        """(median latency ms, CPU ms per image) of ``n`` ``predict`` calls of one JPEG."""
        lat = []
        c0 = time.process_time()
        for _ in range(n):
            t0 = time.perf_counter()
            self.pred.predict(self.jpeg)
            lat.append((time.perf_counter() - t0) * 1000)
        return statistics.median(lat), (time.process_time() - c0) * 1000 / n

    def close(self) -> None:
        self.pred.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def metrics_text(port: int) -> str:
    """The server's GET /metrics (Prometheus text)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def idle_rss_mb(proc: subprocess.Popen, port: int, timeout: float = 120.0) -> float:
    """The server's resident memory once it answers no request (wrk stops with requests still in its batches, whose
    activations would count otherwise: they move the RSS by 15% at 224 px and batch 32)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = metrics_text(port)
        in_flight = next(float(line.split()[1]) for line in text.splitlines()
                         if line.startswith("multilabel_ic_serve_in_flight_requests "))
        if in_flight <= 1:  # the scrape itself
            return rss_mb(proc.pid)
        time.sleep(0.2)
    raise RuntimeError(f"the server still had requests in flight {timeout:g} s after the load stopped")


def batch_stats(port: int) -> tuple[float, float]:
    """(sum, count) of the server's batch-size histogram, from GET /metrics."""
    text = metrics_text(port)
    found = {}
    for line in text.splitlines():
        for key in ("multilabel_ic_serve_batch_size_sum", "multilabel_ic_serve_batch_size_count"):
            if line.startswith(key + " "):
                found[key] = float(line.split()[1])
    return found.get("multilabel_ic_serve_batch_size_sum", 0.0), found.get("multilabel_ic_serve_batch_size_count", 0.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def post(port: int, jpeg: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/invocations", body=jpeg, headers={"Content-Type": "image/jpeg"})
        return conn.getresponse().status
    finally:
        conn.close()


def start_server(artifact: Path, args) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cmd = [sys.executable, "-m", "multilabel_ic", "serve", str(artifact), "--port", str(port), "--runtime",
           args.runtime, "--max-batch", str(args.max_batch), "--max-delay-ms", str(args.max_delay_ms),
           "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    threading.Thread(target=lambda: [print("  server:", line.rstrip(), file=sys.stderr) for line in proc.stderr],
                     daemon=True).start()
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/ping")
            if conn.getresponse().status == 200:
                conn.close()
                return proc, port
            conn.close()
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the server did not answer /ping with 200 within 120 s")
        time.sleep(0.1)


def load_wrk(port: int, body: Path, concurrency: int, duration: float) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT)
    try:
        threads = max(1, min(2, concurrency))
        out = subprocess.run(["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{max(1, round(duration))}s",  # wrk takes whole seconds
                              "--timeout", "30s", "-s", f.name, f"http://127.0.0.1:{port}/invocations"],
                             capture_output=True, text=True, env={**os.environ, "BENCH_BODY": str(body)},
                             timeout=duration + 60)
    finally:
        os.unlink(f.name)
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result: {out.stdout[-500:]} {out.stderr[-500:]}")
    r = json.loads(line[len("BENCH_RESULT "):])
    errors = r["connect_errors"] + r["read_errors"] + r["write_errors"] + r["non_200"] + r["timeouts"]
    return {"requests": r["requests"], "requests_per_sec": r["requests"] / (r["duration_us"] / 1e6),
            "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "mean_ms": r["mean_ms"], "errors": errors,
            "error_kinds": {k: r[k] for k in ("connect_errors", "read_errors", "write_errors", "non_200",
                                              "timeouts")}}


def load_python(port: int, jpeg: bytes, concurrency: int, duration: float) -> dict:
    """A threaded client with one keep-alive connection per thread (for machines without wrk)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + duration

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/invocations", body=jpeg, headers={"Content-Type": "image/jpeg"})
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            if ok:
                mine.append((time.perf_counter() - t0) * 1000)
            else:
                with lock:
                    errors[0] += 1
        conn.close()
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    lat = np.asarray(latencies) if latencies else np.asarray([float("nan")])
    return {"requests": len(latencies) + errors[0], "requests_per_sec": len(latencies) / elapsed,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "mean_ms": float(lat.mean()), "errors": errors[0]}


def run_level(args, generator: str, offline: Offline, proc: subprocess.Popen, port: int, body: Path, jpeg: bytes,
              c: int) -> dict:
    """One concurrency level: ``args.rounds`` server rounds, each just after an offline round (batch images/s at
    concurrency > 1, single-image latency at concurrency 1)."""
    part = args.duration / args.rounds
    rounds = []
    # warm-up: the server's first batches at this concurrency size its buffers (not a leak, not measured); waves of c
    # concurrent requests, so that full-size batches have run whatever the machine's speed
    for _ in range(args.warmup):
        with ThreadPoolExecutor(c) as pool:
            assert all(status == 200 for status in pool.map(lambda _: post(port, jpeg), range(c)))
    before = idle_rss_mb(proc, port)
    load_before = loadavg()
    batches_before = batch_stats(port)
    for _ in range(args.rounds):
        ref, ref_cpu = offline.batch_round() if c > 1 else offline.single_round(args.singles)
        cpu0 = cpu_seconds(proc.pid)
        r = (load_wrk(port, body, c, part) if generator == "wrk" else load_python(port, jpeg, c, part))
        server_cpu = (cpu_seconds(proc.pid) - cpu0) * 1000 / max(1, r["requests"])
        rounds.append({"offline": ref, "offline_cpu_ms_per_image": ref_cpu, "server_cpu_ms_per_request": server_cpu,
                       **r})
    batches_after = batch_stats(port)
    after = idle_rss_mb(proc, port)
    n = sum(r["requests"] for r in rounds)
    level = {"concurrency": c, "duration_s": args.duration, "rounds": rounds, "requests": n,
             "requests_per_sec": statistics.median(r["requests_per_sec"] for r in rounds),
             "p50_ms": statistics.median(r["p50_ms"] for r in rounds),
             "p99_ms": max(r["p99_ms"] for r in rounds), "errors": sum(r["errors"] for r in rounds),
             "rss_mb_before": before, "rss_mb_after": after, "rss_growth": after / before - 1,
             "mean_batch_size": ((batches_after[0] - batches_before[0]) / (batches_after[1] - batches_before[1])
                                 if batches_after[1] > batches_before[1] else None),
             "loadavg_before": load_before, "loadavg_after": loadavg(),
             # CPU time per image, which other processes' load disturbs far less than wall time
             "server_cpu_ms_per_request": statistics.median(r["server_cpu_ms_per_request"] for r in rounds),
             "offline_cpu_ms_per_image": statistics.median(r["offline_cpu_ms_per_image"] for r in rounds),
             "offline_over_server_cpu": statistics.median(r["offline_cpu_ms_per_image"]
                                                          / r["server_cpu_ms_per_request"] for r in rounds)}
    if c > 1:
        level["offline_batch_images_per_sec"] = statistics.median(r["offline"] for r in rounds)
        level["vs_offline_images_per_sec"] = statistics.median(r["requests_per_sec"] / r["offline"] for r in rounds)
    else:
        level["offline_single_image_p50_ms"] = statistics.median(r["offline"] for r in rounds)
        level["p50_minus_offline_single_ms"] = statistics.median(r["p50_ms"] - r["offline"] for r in rounds)
    vs = (f"{level['vs_offline_images_per_sec']:.2f}x offline {level['offline_batch_images_per_sec']:.1f} img/s"
          if c > 1 else f"offline single {level['offline_single_image_p50_ms']:.1f} ms")
    print(f"  c={c}: {level['requests_per_sec']:.1f} req/s, p50 {level['p50_ms']:.1f} ms, p99 {level['p99_ms']:.1f} ms "
          f"({vs}), CPU ms/img server {level['server_cpu_ms_per_request']:.1f} offline "
          f"{level['offline_cpu_ms_per_image']:.1f}, errors {level['errors']}, batch {level['mean_batch_size'] or 0:.1f}, RSS {before:.0f} -> "
          f"{after:.0f} MB, load {load_before[0]:.2f}", file=sys.stderr, flush=True)
    return level


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="18:224,18:64", help="depth:size pairs, comma-separated")
    ap.add_argument("--concurrency", default="1,8,32", help="client connections per level, comma-separated")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds per level")
    ap.add_argument("--runtime", choices=["torch", "onnxruntime", "openvino"], default="torch")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-delay-ms", type=float, default=5.0)
    ap.add_argument("--batch", type=int, default=32, help="the offline predictor's batch")
    ap.add_argument("--rounds", type=int, default=4, help="server rounds per level, each after an offline round")
    ap.add_argument("--singles", type=int, default=20, help="offline single-image predictions per round")
    ap.add_argument("--warmup", type=int, default=3, help="waves of concurrent requests at each level before it is "
                    "measured")
    ap.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    ap.add_argument("--output", type=Path, default=Path("bench-output"))
    args = ap.parse_args()

    generator = args.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "python"
    if generator == "wrk" and not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install wrk (Debian/Ubuntu), or run with --generator python")
    levels = [int(c) for c in args.concurrency.split(",")]
    results: dict = {"settings": {**{k: v for k, v in vars(args).items() if k != "output"}, "generator": generator,
                                  "cores": os.cpu_count()}, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.models.split(","):
            layers, size = (int(x) for x in spec.split(":"))
            name = f"resnet{layers}-{size}"
            artifact = make_model(Path(tmp), layers, size)
            jpeg = make_jpeg(size)
            body = Path(tmp) / f"{name}.jpg"
            body.write_bytes(jpeg)
            print(f"[{name}] offline predictor ({args.runtime}) and server ...", file=sys.stderr, flush=True)
            offline = Offline(artifact, jpeg, args.runtime, args.batch)
            entry: dict = {"jpeg_bytes": len(jpeg), "levels": {}}
            proc, port = start_server(artifact, args)
            try:
                for _ in range(5):  # warm-up
                    assert post(port, jpeg) == 200
                entry["server_rss_mb_start"] = rss_mb(proc.pid)
                for c in levels:
                    entry["levels"][str(c)] = run_level(args, generator, offline, proc, port, body, jpeg, c)
            finally:
                proc.terminate()
                entry["server_exit_code_on_sigterm"] = proc.wait(60)
                offline.close()
            results["models"][name] = entry
    write(args.output, "serve.json", results, device="cpu")


if __name__ == "__main__":
    main()
