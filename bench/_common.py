"""Shared benchmark helpers: machine description, peak RSS and the canary command line."""

from __future__ import annotations

import os
import platform
import resource
import sys


def machine() -> dict[str, object]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def print_machine() -> None:
    m = machine()
    print(f"machine: {m['cpu']} · {m['cores']} cores · Python {m['python']} · {m['platform']}")


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def canary_command(*args: str) -> list[str]:
    """``python -m canary ARGS`` with this interpreter: the benchmarks run the product's own CLI."""
    return [sys.executable, "-m", "canary", *args]
