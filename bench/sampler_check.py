"""Wall time of the default ``canary sampler-check`` sweep, with machine info.

Run: ``.venv/bin/python bench/sampler_check.py [--sampler module:function]``. Prints the
verdict, the time spent compiling versus running (first versus repeated sweep in one process)
and ends with one JSON line. The issue's budget: the default sweep within 60 s on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time

from canary.cli.sampler_check import DEFAULT_SAMPLER, run_sampler_check


def main() -> int:
    sampler = sys.argv[sys.argv.index("--sampler") + 1] if "--sampler" in sys.argv else DEFAULT_SAMPLER
    started, cpu_started = time.perf_counter(), time.process_time()
    report = run_sampler_check(sampler, grid="default", seed=0)
    cold = time.perf_counter() - started  # includes importing JAX and every compilation
    # CPU seconds over all threads: a wall time taken on a shared machine needs this beside it.
    cold_cpu = time.process_time() - cpu_started
    started = time.perf_counter()
    warm_report = run_sampler_check(sampler, grid="default", seed=1)
    warm = time.perf_counter() - started  # compiled executables are cached: run time only
    print("\n".join(report.summary_lines()))
    print(f"default sweep: {cold:.1f} s cold (compile + run; {cold_cpu:.1f} CPU s), {warm:.1f} s warm")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    print(f"machine: {platform.machine()} cpus={os.cpu_count()} device={report.device}")
    figures = {
        "bench": "sampler_check",
        "sampler": sampler,
        "device": report.device,
        "jax_version": report.jax_version,
        "cpus": os.cpu_count(),
        "cases": report.config["cases"],
        "cold_s": round(cold, 2),
        "cold_cpu_s": round(cold_cpu, 2),
        "load_average": round(os.getloadavg()[0], 2),
        "warm_s": round(warm, 2),
        "passed": report.passed and warm_report.passed,
    }
    print(json.dumps(figures, sort_keys=True))
    return 0 if figures["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
