"""Run events: what happened to a run (start, resume, stop and why, divergence, collapse, disk full, best
checkpoint) as JSON lines in RUN_DIR/events.jsonl, so reports and tools never parse train.log's prose.

train.log stays for people. Run folders from before events.jsonl are read once, here, from train.log
(`read_events` marks those records legacy=True).
"""

from __future__ import annotations

import json
import re
import time
from enum import Enum
from pathlib import Path
from typing import Any

from ganforge.fileio import jsonl_records

EVENTS_FILE = "events.jsonl"


class Stop(str, Enum):
    """Why a run stopped before its target: the one list of reasons (summaries, events, exit codes)."""

    SIGINT = "SIGINT"
    SIGTERM = "SIGTERM"
    TIME_BUDGET = "time budget"
    DISK_FULL = "disk full"

    def __str__(self) -> str:  # "stopped by time budget", not "Stop.TIME_BUDGET"
        return self.value


class Event(str, Enum):
    """The kinds of events a run folder records."""

    START = "start"
    RESUME = "resume"
    INIT = "init"
    STOP = "stop"
    DIVERGED = "diverged"
    COLLAPSE = "collapse"
    DISK_FULL = "disk_full"
    BEST = "best"
    FINISH = "finish"

    def __str__(self) -> str:
        return self.value


def log_event(run_path: Path | str, kind: Event, **fields: Any) -> dict[str, Any]:
    """Append one event ({"event", "time", **fields}) to the run's events.jsonl and return it."""
    rec = {"event": Event(kind).value, "time": time.time(), **fields}
    with open(Path(run_path) / EVENTS_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec, default=str) + "\n")
    return rec


def read_events(run_path: Path | str) -> list[dict[str, Any]]:
    """The run's events, oldest first; a line cut by a crash is skipped. Without events.jsonl (a run folder
    from an older ganforge), the same facts are read from train.log's wording of that time."""
    path = Path(run_path) / EVENTS_FILE
    if not path.is_file():
        return _legacy_events(Path(run_path) / "train.log")
    return [r for r in jsonl_records(path.read_text(encoding="utf-8").splitlines()) if "event" in r]


# train.log wording before events.jsonl existed; kept only to read old run folders
_TIME = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\s+"
_LEGACY: list[tuple[Event, re.Pattern[str]]] = [
    (Event.DIVERGED, re.compile(_TIME + r".*training diverged at step (?P<step>\d+)")),
    (Event.STOP, re.compile(_TIME + r"(?!.*WARNING).*stopped by (?P<reason>.+?) at step (?P<step>\d+)")),
    (Event.COLLAPSE, re.compile(_TIME + r".*step (?P<step>\d+): samples from different noise are nearly identical")),
    (Event.RESUME, re.compile(_TIME + r".*resumed from .*\(step (?P<step>\d+)\)")),
    (Event.START, re.compile(_TIME + r".*started: ")),
    (Event.FINISH, re.compile(_TIME + r".*finished at step (?P<step>\d+)")),
]


def _legacy_events(log: Path) -> list[dict[str, Any]]:
    if not log.is_file():
        return []
    out: list[dict[str, Any]] = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        for kind, pattern in _LEGACY:
            m = pattern.search(line)
            if m is None:
                continue
            rec: dict[str, Any] = {"event": kind.value, "legacy": True}
            try:
                rec["time"] = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))
            except ValueError:
                pass
            fields = m.groupdict()
            if fields.get("step") is not None:
                rec["step"] = int(fields["step"])
            if fields.get("reason") is not None:
                rec["reason"] = fields["reason"]
            out.append(rec)
            break
    return out
