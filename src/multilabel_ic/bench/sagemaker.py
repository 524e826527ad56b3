"""SageMaker throughput from what a job leaves behind: its CloudWatch log lines (live, or a saved export) and its
description (billable seconds, creation and start times). Cost per epoch uses the editable price table.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import statistics
from importlib import resources
from pathlib import Path

from .._read import GiB
from ..backends.sagemaker.cloudwatch import LogParser, stream_host
from ..exceptions import UsageError

__all__ = ["load_prices", "read_log_export", "job_figures", "figures_from_log_file", "figures_from_job"]

_ISO = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?)\s+(.*)$")
_BRACKET = re.compile(r"^\[(\d\d/\d\d/\d{4} \d\d:\d\d:\d\d) ")


def load_prices(path: str | Path | None = None) -> dict:
    """The instance price table (USD per instance-hour); the packaged one unless ``path`` is given."""
    if path:
        from ..cli_args import read_option_text

        text = read_option_text(Path(path), "--prices")
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"--prices {path}: not valid JSON ({exc}).") from None
        if not isinstance(doc, dict):
            raise UsageError(f"--prices {path}: expected a JSON object of instance type -> USD per hour.")
        return doc
    return json.loads(resources.files("multilabel_ic.bench").joinpath("prices.json").read_text())


def _ms(stamp: str) -> int:
    s = stamp.replace("Z", "+00:00")
    t = dt.datetime.fromisoformat(s)
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return int(t.timestamp() * 1000)


def read_log_export(path: str | Path) -> LogParser:
    """Parse a saved log export: JSON (``aws logs get-log-events`` / ``filter-log-events`` output, or a list of
    events) or text, one message per line, optionally preceded by an ISO timestamp and/or a ``stream:`` name."""
    from ..cli_args import read_option_text

    path = Path(path)
    text = read_option_text(path, "--sagemaker-log", limit=GiB)
    parser = LogParser()
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")) and not _BRACKET.match(stripped):
        doc = json.loads(text)
        events = doc.get("events", doc) if isinstance(doc, dict) else doc
        for ev in events:
            host = stream_host(ev.get("logStreamName", "algo-1"))
            parser.feed(ev["message"], host=host, timestamp_ms=ev.get("timestamp"))
        return parser
    for line in text.splitlines():
        ts = None
        if m := _ISO.match(line):
            ts, line = _ms(m.group(1)), m.group(2)
        host = "algo-1"
        if m := re.match(r"^(\S*algo-\d+\S*)\s+(.*)$", line):
            host, line = stream_host(m.group(1)), m.group(2)
        if ts is None and (b := _BRACKET.match(line)):
            ts = int(dt.datetime.strptime(b.group(1), "%m/%d/%Y %H:%M:%S").replace(
                tzinfo=dt.timezone.utc).timestamp() * 1000)
        parser.feed(line, host=host, timestamp_ms=ts)
    return parser


def job_figures(parser: LogParser, *, instance_type: str, instance_count: int | None = None,
                billable_seconds: float | None = None, created_ms: int | None = None,
                prices: dict | None = None, source: str = "") -> dict:
    """images/s (all hosts), seconds per epoch, time to first step and cost per epoch of one job."""
    summary = parser.summary()
    hosts = summary["hosts"]
    count = instance_count or max(len(hosts), 1)
    times = [r["time_cost"] for recs in hosts.values() for r in recs if "time_cost" in r]
    sec_per_epoch = statistics.median(times) if times else None
    per_host_epoch = {h: [{"epoch": r["epoch"], "images_per_sec": r.get("images_per_sec"),
                           "time_cost": r.get("time_cost")} for r in recs] for h, recs in hosts.items()}
    prices = prices if prices is not None else load_prices()
    price = prices.get("per_hour", {}).get(instance_type)
    first = summary["first_step_ms"]
    return {
        "source": source, "instance_type": instance_type, "instance_count": count,
        "images_per_sec": summary["images_per_sec_total"],
        "images_per_sec_per_host": summary["speed_median_per_host"],
        "per_host_epochs": per_host_epoch,
        "seconds_per_epoch": sec_per_epoch,
        "billable_seconds": billable_seconds,
        "time_to_first_step_s": (first - created_ms) / 1000 if first is not None and created_ms is not None else None,
        "price_per_instance_hour": price, "price_table": {k: prices.get(k) for k in ("as_of", "region", "currency")},
        "cost_per_epoch": price * count * sec_per_epoch / 3600 if price is not None and sec_per_epoch else None,
        "log_lines": parser.lines,
    }


def figures_from_log_file(path: str | Path, *, instance_type: str, instance_count: int | None = None,
                          created: str | None = None, billable_seconds: float | None = None,
                          prices: dict | None = None) -> dict:
    parser = read_log_export(path)
    return job_figures(parser, instance_type=instance_type, instance_count=instance_count,
                       billable_seconds=billable_seconds, created_ms=_ms(created) if created else None,
                       prices=prices, source=f"log export {Path(path).name}")


def figures_from_job(backend, job_name: str, *, prices: dict | None = None) -> dict:
    """Figures of a (finished or running) training job, read through a :class:`SageMakerBackend`."""
    from ..backends.sagemaker.cloudwatch import stream_job_logs

    desc = backend._call("sagemaker", "describe_training_job", TrainingJobName=job_name)
    parser = LogParser()
    stream_job_logs(backend.client("logs"), job_name, {},
                    lambda host, msg, ts: parser.feed(msg, host=host, timestamp_ms=ts))
    created = desc.get("CreationTime")
    created_ms = int(created.timestamp() * 1000) if created is not None else None
    rc = desc.get("ResourceConfig", {})
    from .engines import engine_of_image

    figures = job_figures(parser, instance_type=rc.get("InstanceType", "?"), instance_count=rc.get("InstanceCount"),
                          billable_seconds=desc.get("BillableTimeInSeconds"), created_ms=created_ms, prices=prices,
                          source=f"training job {job_name}")
    figures["engine"] = engine_of_image(desc.get("AlgorithmSpecification", {}).get("TrainingImage", ""))
    return figures
