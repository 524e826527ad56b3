"""The algorithm's CloudWatch log lines: parsing them into the per-epoch metrics structure the local backend writes,
and streaming a training job's log streams while it runs.

Lines look like ``[11/24/2026 07:41:14 INFO 140005146545024] Epoch[0] Batch [20]#011Speed: 111.811 samples/sec#011
accuracy=0.452381`` (CloudWatch renders TAB as ``#011``). Each host (``algo-1``, ``algo-2``...) logs its own lines.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["parse_log_lines", "LogParser", "stream_host", "LOG_GROUP", "stream_job_logs"]

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
_PREFIX = r"^(?:\[(?P<stamp>\d\d/\d\d/\d{4} \d\d:\d\d:\d\d) \w+ \d+\] )?"
_SEP = r"(?:#011|\t|\s)+"
_BATCH = re.compile(_PREFIX + r"Epoch\[(?P<epoch>\d+)\] Batch \[(?P<batch>\d+)(?:-\d+)?\]" + _SEP +
                    r"Speed: (?P<speed>[\d.]+) samples/sec(?:" + _SEP + r"(?P<metrics>.*))?$")
_TRAIN = re.compile(_PREFIX + r"Epoch\[(?P<epoch>\d+)\] Train-(?P<name>[\w-]+)=(?P<value>[-\d.eE+]+|nan)")
_VALID = re.compile(_PREFIX + r"Epoch\[(?P<epoch>\d+)\] Validation-(?P<name>[\w-]+)=(?P<value>[-\d.eE+]+|nan)")
_TIME = re.compile(_PREFIX + r"Epoch\[(?P<epoch>\d+)\] Time cost=(?P<value>[\d.]+)")
_METRIC = re.compile(r"([\w-]+)=([-\d.eE+]+)")


def stream_host(stream_name: str) -> str:
    """``ic-job/algo-1-1700000000`` -> ``algo-1``."""
    tail = stream_name.rsplit("/", 1)[-1]
    m = re.match(r"(algo-\d+)", tail)
    return m.group(1) if m else tail


def _num(v: str) -> float:
    return float(v)


@dataclass
class LogParser:
    """Accumulates log lines (from any number of hosts) into per-epoch metrics."""

    hosts: dict = field(default_factory=dict)
    first_step_ms: int | None = None
    lines: int = 0
    stopped_early: bool = False  # a log line announced early stopping (best effort: the wording is not documented)

    def feed(self, line: str, *, host: str = "algo-1", timestamp_ms: int | None = None) -> None:
        self.lines += 1
        line = line.rstrip("\n")
        if "early stopping" in line.lower():
            self.stopped_early = True
        epochs = self.hosts.setdefault(host, {})
        if m := _BATCH.search(line):
            rec = epochs.setdefault(int(m["epoch"]), {"epoch": int(m["epoch"]), "speed": [], "batches": []})
            rec["speed"].append(_num(m["speed"]))
            rec["batches"].append(int(m["batch"]))
            for name, value in _METRIC.findall(m["metrics"] or ""):
                rec.setdefault(f"train_{name}_windows", []).append(_num(value))
            if timestamp_ms is not None and (self.first_step_ms is None or timestamp_ms < self.first_step_ms):
                self.first_step_ms = timestamp_ms
        elif m := _TRAIN.search(line):
            rec = epochs.setdefault(int(m["epoch"]), {"epoch": int(m["epoch"]), "speed": [], "batches": []})
            rec[f"train_{m['name']}"] = _num(m["value"])
        elif m := _VALID.search(line):
            rec = epochs.setdefault(int(m["epoch"]), {"epoch": int(m["epoch"]), "speed": [], "batches": []})
            rec[f"validation_{m['name']}"] = _num(m["value"])
        elif m := _TIME.search(line):
            rec = epochs.setdefault(int(m["epoch"]), {"epoch": int(m["epoch"]), "speed": [], "batches": []})
            rec["time_cost"] = _num(m["value"])

    def epochs(self, host: str | None = None) -> list[dict]:
        """Per-epoch records of one host (the first by default), in the local backend's key names."""
        if not self.hosts:
            return []
        host = host or sorted(self.hosts)[0]
        out = []
        for e in sorted(self.hosts[host]):
            rec = dict(self.hosts[host][e])
            if rec["speed"]:
                rec["images_per_sec"] = statistics.median(rec["speed"])
            out.append(rec)
        return out

    def summary(self) -> dict:
        """Everything parsed: per host epochs, and the whole job's images/s (hosts add up under dist_sync)."""
        per_host = {h: self.epochs(h) for h in sorted(self.hosts)}
        speeds = {h: [s for r in recs for s in r["speed"]] for h, recs in per_host.items()}
        medians = {h: statistics.median(v) for h, v in speeds.items() if v}
        return {"hosts": per_host, "speed_median_per_host": medians,
                "images_per_sec_total": sum(medians.values()) if medians else None,
                "first_step_ms": self.first_step_ms}


def parse_log_lines(lines: Iterable[str], host: str = "algo-1") -> LogParser:
    p = LogParser()
    for line in lines:
        p.feed(line, host=host)
    return p


def stream_job_logs(logs_client, job_name: str, seen: dict, on_line: Callable[[str, str, int], None]) -> int:
    """Fetch new events of every ``<job>/algo-*`` stream once; ``seen`` keeps the per-stream tokens between calls.

    Returns the number of new events. A log group that does not exist yet (job still starting) counts as none.
    """
    from botocore.exceptions import ClientError

    try:
        streams = []
        kwargs: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamNamePrefix": f"{job_name}/"}
        while True:
            resp = logs_client.describe_log_streams(**kwargs)
            streams += [s["logStreamName"] for s in resp.get("logStreams", [])]
            if not resp.get("nextToken"):
                break
            kwargs["nextToken"] = resp["nextToken"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ResourceNotFoundException":
            return 0
        raise
    count = 0
    for stream in sorted(streams):
        host = stream_host(stream)
        while True:
            kwargs = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True}
            if stream in seen:
                kwargs["nextToken"] = seen[stream]
            resp = logs_client.get_log_events(**kwargs)
            for event in resp.get("events", []):
                on_line(host, event["message"], event.get("timestamp", 0))
                count += 1
            token = resp.get("nextForwardToken")
            if not resp.get("events") or token == seen.get(stream):
                seen[stream] = token
                break
            seen[stream] = token
    return count
