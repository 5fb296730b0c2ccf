"""A real Alertmanager on loopback whose only receiver is a loopback webhook recorder."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.prombin import Server, running

# Short waits so a test sees Alertmanager's own notifications within a second or two.
CONFIG = """
route:
  receiver: recorder
  group_by: [alertname, cell, metric]
  group_wait: 100ms
  group_interval: 500ms
  repeat_interval: 1h
receivers:
  - name: recorder
    webhook_configs:
      - url: {hook}
        send_resolved: true
"""


@contextmanager
def running_alertmanager(
    tmp_path: Path, hook_url: str, name: str = "am", cluster: tuple[int, int] | None = None
) -> Iterator[Server]:
    """Alertmanager 0.25 (Debian's) notifying ``hook_url``; alone, or with ``cluster`` = (its gossip
    port, its peer's) one member of an HA pair that shares silences and the notification log."""
    home = tmp_path / name
    home.mkdir()
    (home / "alertmanager.yml").write_text(CONFIG.format(hook=hook_url))
    args = [
        f"--config.file={home / 'alertmanager.yml'}",
        f"--storage.path={home / 'data'}",
        "--log.level=warn",
    ]
    if cluster is None:
        args.append("--cluster.listen-address=")  # no gossip port: nothing to join
    else:
        # Fast gossip, and the second member waits only 1 s for the first to notify (default 15 s).
        args += [f"--cluster.listen-address=127.0.0.1:{cluster[0]}", f"--cluster.peer=127.0.0.1:{cluster[1]}",
                 "--cluster.gossip-interval=50ms", "--cluster.pushpull-interval=1s",
                 "--cluster.peer-timeout=1s"]  # fmt: skip
    with running("prometheus-alertmanager", args, home / "log") as server:
        yield server


def alerts(am: Server, **params: str) -> list[dict[str, Any]]:
    """Alertmanager's ``GET /api/v2/alerts`` (active, silenced and inhibited alerts)."""
    response = httpx.get(f"{am.url}/api/v2/alerts", params=params, timeout=5)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()
    return result


def silence(am: Server, matchers: dict[str, str], starts_at: str, ends_at: str) -> str:
    """Create a silence matching ``matchers`` exactly; returns its id."""
    body = {
        "matchers": [{"name": k, "value": v, "isRegex": False, "isEqual": True} for k, v in matchers.items()],
        "startsAt": starts_at,
        "endsAt": ends_at,
        "createdBy": "canary tests",
        "comment": "maintenance",
    }
    response = httpx.post(f"{am.url}/api/v2/silences", json=body, timeout=5)
    response.raise_for_status()
    return str(response.json()["silenceID"])
