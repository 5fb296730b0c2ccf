"""No configured secret reaches the database or the logs, even when an upstream echoes it back."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from canary.config.secrets import REDACTED, redact, register_secret
from canary.logs import configure_logging
from tests.faults.misbehaving import ONE_PROBE, EchoHeadersUpstream
from tests.loopback import serve_in_thread

KEY = "sk-faults-ECHOED-4c1d9e77"
HEADER_SECRET = "hdr-faults-SECRET-0a9b8c"


def text_rows(db_url: str) -> list[str]:
    """Every text column of ``runs`` and every ``scores.detail``, as text."""
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        columns = [
            c["name"]
            for c in sa.inspect(conn).get_columns("runs")
            if isinstance(c["type"], sa.Text | sa.String) or "JSON" in str(c["type"]).upper()
        ]
        select = ", ".join(f"coalesce(\"{c}\"::text, '')" for c in columns)
        rows = [" | ".join(r) for r in conn.execute(sa.text(f"SELECT {select} FROM runs")).all()]
        rows += [str(d) for d in conn.execute(sa.text("SELECT detail::text FROM scores")).scalars()]
    engine.dispose()
    return rows


def test_a_401_echoing_request_headers_leaves_no_key_in_database_or_logs(db_url: str, tmp_path: Path) -> None:
    (tmp_path / "probes").mkdir()
    (tmp_path / "probes" / "one.toml").write_text(ONE_PROBE)
    with serve_in_thread(EchoHeadersUpstream()) as server:
        (tmp_path / "canary.toml").write_text(
            'probes_dir = "probes"\n[[targets]]\nmodel = "m"\nplatform = "p"\npool = "a"\n'
            f'provider = "openai-chat"\nbase_url = "{server.url}/v1"\nmodel_id = "ok"\n'
            'api_key = "env:FAULTS_KEY"\nheaders = { x-team = "oncall", x-tenant-token = "env:FAULTS_HDR" }\n'
            'served_by_headers = ["x-served-pool", "x-served-replica"]\n'
        )
        env = {**os.environ, "DATABASE_URL": db_url, "FAULTS_KEY": KEY, "FAULTS_HDR": HEADER_SECRET}
        proc = subprocess.run(
            [sys.executable, "-m", "canary", "run", "--once", "--config", str(tmp_path / "canary.toml")]
            + ["--log-level", "DEBUG"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    assert proc.returncode == 1, proc.stdout + proc.stderr  # every run failed: 401
    assert "client_error:3" in proc.stdout, proc.stdout
    rows = text_rows(db_url)
    assert len(rows) == 3
    for secret in (KEY, HEADER_SECRET):
        assert secret not in proc.stdout + proc.stderr
        assert not [row for row in rows if secret in row]
    assert all(REDACTED in row for row in rows)  # the echo was stored, redacted
    assert "oncall" in rows[0]  # not a credential: kept


def test_redact_removes_known_values_and_credential_headers_in_any_notation() -> None:
    text = (
        "{'Authorization': 'Bearer abc123xyz', \"x-api-key\": \"k-1234\"}\n"
        "proxy-authorization: Basic dXNlcjpw\n"
        "api-key=zzzz9999; url postgresql://canary:pw-0042@db/canary"
    )
    out = redact(text, ["pw-0042"])
    for leaked in ("abc123xyz", "k-1234", "dXNlcjpw", "zzzz9999", "pw-0042"):
        assert leaked not in out
    assert out.count(REDACTED) == 5 and "postgresql://canary:" in out


def test_a_logged_exception_quoting_a_secret_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    register_secret("sk-logged-SECRET-77aa")
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("INFO", json=True)
    try:
        raise RuntimeError("upstream said: sk-logged-SECRET-77aa")
    except RuntimeError:
        logging.getLogger("canary.test").exception("failed with %s", "sk-logged-SECRET-77aa")
    finally:
        # The handler writes to pytest's captured stderr, which closes after this test.
        root.handlers[:], level = saved
        root.setLevel(level)
    err = capsys.readouterr().err
    assert "sk-logged-SECRET-77aa" not in err and err.count(REDACTED) >= 2
