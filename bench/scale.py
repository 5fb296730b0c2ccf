"""Scale: 1,000-10,000 cells on 1, 2 and 4 replicas of ``canary serve`` sharing one PostgreSQL,
then detection and retention over a large stored history.

Part 1 (``bench/_scale_replicas.py``), for each cell count and replica count: real ``canary
serve`` processes (``--shard i/N``) probe a zero-latency loopback upstream (another process);
after all are ready and ``--warmup`` seconds more (one interval by default: registration and
first passes are start-up, not the steady state), figures are taken over ``--duration`` seconds;
one PostgreSQL (embedded, as ``DATABASE_URL``) stores everything. Printed: scheduler lag p50/p99
(the replicas' ``canary_scheduler_lag_seconds`` histograms summed, over the window only), stored
runs/s, PostgreSQL CPU seconds per stored run (all server processes, user + system), one
detection round over the stored cells, peak RSS per replica, bytes per stored run (runs, scores
and observations with their indexes and TOAST), and each figure's ratio to one replica.

Part 2 (``bench/_scale_big.py``), on a PostgreSQL of its own under ``--big-data``: ``--big-runs``
runs over 1,000 cells (3 probes, 3 scores each) are generated with ``generate_series`` one day at a
time (a pass every 6 minutes) and their observations backfilled by a first detection round, once;
later runs reuse that history. Then rounds a minute apart, each after storing that minute's runs
(the ``<= 1 s`` figure, with its phases), and dropping the oldest day's partitions. Token
logprobs' size is measured on one realistic answer (64 tokens, 5 alternatives each) as JSONB and
as stored. Part 2 alone: ``--cells ''``.

    .venv/bin/python bench/scale.py [--cells 1000,5000,10000] [--replicas 1,2,4] [--interval 30]
                                    [--warmup 30] [--duration 30] [--big-runs 10000000]
                                    [--big-data .canary-data/bench-scale-big]

The defaults are short (30 s of warm-up and 30 s measured per configuration, nine of them) to keep
the whole run near 15 minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import print_machine  # noqa: E402
from bench._scale_big import big_history, logprob_sizes, print_big  # noqa: E402
from bench._scale_db import new_database, server_pid  # noqa: E402
from bench._scale_replicas import grid  # noqa: E402
from canary.storage.engine import start_embedded  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", default="1000,5000,10000")
    parser.add_argument("--replicas", default="1,2,4")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds measured per configuration")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between passes of one cell")
    parser.add_argument(
        "--warmup", type=float, default=30.0, help="seconds run before measuring (steady state, not start-up)"
    )
    parser.add_argument("--big-runs", type=int, default=10_000_000, help="runs stored for part 2 (0: skip)")
    parser.add_argument(
        "--big-data", type=Path, default=ROOT / ".canary-data" / "bench-scale-big",
        help="where part 2 keeps its PostgreSQL and history between runs",
    )  # fmt: skip
    args = parser.parse_args()
    print_machine()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        server_url, server = start_embedded(workdir / "pg")
        try:
            jsonb_bytes, stored_bytes = logprob_sizes(new_database(server_url, "scale_sizes"))
            print(f"token logprobs of one 64-token answer: {jsonb_bytes} B as JSONB, {stored_bytes} B stored")
            results = grid(workdir, server_url, server_pid(workdir / "pg"), args)
        finally:
            server.cleanup()  # type: ignore[attr-defined]
    big = big_history(args.big_runs, args.big_data) if args.big_runs else {}
    if big:
        print_big(big)
    measured = [r for r in results if "error" not in r]
    largest = max(measured, key=lambda r: (r["cells"], r["replicas"])) if measured else {}
    final: dict[str, Any] = {
        "cells": largest.get("cells"),
        "replicas": largest.get("replicas"),
        "lag_p99_s": largest.get("lag_p99_s"),
        "runs_per_s": largest.get("runs_per_s"),
        "detection_round_s_10m": big.get("detection_round_s_10m"),
        "bytes_per_run": largest.get("bytes_per_run"),
        "partition_drop_s": big.get("partition_drop_s"),
        "logprobs_bytes_jsonb": jsonb_bytes,
        "logprobs_bytes_stored": stored_bytes,
        **{
            k: v
            for k, v in big.items()
            if k not in ("partitions_dropped", "detection_round_s_10m", "partition_drop_s")
        },
        "configurations": results,
    }
    print(json.dumps(final))


if __name__ == "__main__":
    main()
