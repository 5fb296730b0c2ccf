"""Replicas killed and frozen: real ``canary serve`` processes on one PostgreSQL and a loopback upstream.

The upstream counts, per cell, the requests open at once: a cell probed by two replicas at once
shows as two. Periods are short (heartbeat 1 s, lease 2 s) so each case runs in seconds.
"""

from __future__ import annotations

import signal
import time

from bench._fault_replicas import (
    CELLS,
    detection_steps,
    freeze_leader,
    kill_replica_with_cells,
    replica_fleet,
    takeover_s,
    wait_for,
)

HEARTBEAT_S, LEASE_S = 1.0, 2.0
# What the bounds leave out: the first request of a pass, and processes starved of CPU (the
# bounds hold on an idle machine; a loaded CI runner took 1-2 s longer). Without the fix, neither
# takeover happens at all while the replica is down.
SLACK_S = 3.0


def test_a_killed_replicas_cells_are_probed_again_within_two_heartbeats_and_never_twice_at_once(
    db_url: str,
) -> None:
    with replica_fleet(db_url, replicas=2, cells=CELLS, heartbeat_s=HEARTBEAT_S, lease_s=LEASE_S) as fleet:
        time.sleep(1.0)
        killed, cells = kill_replica_with_cells(fleet)
        assert cells
        seconds = takeover_s(fleet, cells, killed)
        assert seconds < 2 * HEARTBEAT_S + SLACK_S, seconds
        (survivor,) = [r for r in fleet.replicas if r.proc.poll() is None]
        wait_for(
            lambda: fleet.claims() == {survivor.id: {f"m/p/c{i:02d}" for i in range(CELLS)}},
            "all cells moved",
        )
        assert survivor.metric("canary_replica_cells") == CELLS
        overlaps = [(cell, round(t - killed, 2)) for cell, t in fleet.upstream.overlaps]
        assert not overlaps, f"probed twice at once (cell, seconds after the kill): {overlaps}"


def test_a_frozen_leader_loses_leadership_and_after_waking_does_not_act_as_leader(db_url: str) -> None:
    with replica_fleet(db_url, replicas=2, cells=CELLS, heartbeat_s=HEARTBEAT_S, lease_s=LEASE_S) as fleet:
        wait_for(lambda: fleet.leader() is not None, "a replica leads")
        freeze = freeze_leader(fleet)  # returns once another replica has completed a detection round
        old, frozen = freeze.leader, freeze.at
        assert freeze.lease_moved_s < 1.25 * LEASE_S + SLACK_S, freeze
        new = fleet.leader()
        assert new is not None and new is not old
        time.sleep(2 * HEARTBEAT_S)  # long enough for its cells to move too
        old.proc.send_signal(signal.SIGCONT)

        wait_for(
            lambda: old.metric("canary_singleton_leader") == 0, "the woken replica knows it does not lead"
        )
        steps = detection_steps(old)
        time.sleep(LEASE_S)  # past the renewal the woken replica would have tried
        assert fleet.leader() is new  # it did not take the lease back
        assert detection_steps(old) == steps
        assert old.metric("canary_singleton_leader") == 0
        assert "singleton duties stopped" in old.log.read_text()
        # It rejoins as a member: the cells are shared again, and none was ever probed twice at once.
        wait_for(lambda: len(fleet.claims()) == 2, "the woken replica probes its share again", 30)
        overlaps = [(cell, round(t - frozen, 2)) for cell, t in fleet.upstream.overlaps]
        assert not overlaps, f"probed twice at once (cell, seconds after the freeze): {overlaps}"
