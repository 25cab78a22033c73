"""The machine and software a report was written on: the context that timings and numbers need."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return None


def environment() -> dict[str, str]:
    """Hardware and versions, as label -> text."""
    import numpy as np
    import torch

    from ganforge import __version__

    mem = _memory_gb()
    out = {
        "CPU": f"{_cpu_model()} ({os.cpu_count()} logical cores, torch uses {torch.get_num_threads()} threads)",
        "memory": f"{mem:.1f} GiB" if mem else "unknown",
        "GPU": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "OS": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "ganforge": __version__,
    }
    return out
