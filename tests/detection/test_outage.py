"""A cell that answers nothing is an availability finding, whatever its own history says.

The end-to-end case (a fleet cell refused from its first request, through PostgreSQL and a
webhook) is in tests/alerting/test_incident_lifecycle.py.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from canary.config.sections import DetectionSpec
from canary.detection.decisions import Counts, format_message, outage_candidate

NOW = datetime(2025, 8, 29, 12, 0, tzinfo=UTC)
T = NOW.timestamp()
SPEC = DetectionSpec()  # no_data_intervals = 3


def test_a_cell_with_no_answer_for_three_intervals_is_an_availability_finding() -> None:
    assert outage_candidate(1, "m/p/a", "availability", T - 800, T - 86400, 300, T, SPEC) is None
    down = outage_candidate(1, "m/p/a", "availability", T - 1000, T - 86400, 300, T, SPEC)
    assert down is not None and down.kind == "availability" and down.metric == "availability"
    assert down.details["outage"] and down.details["change_at"] == T - 1000


def test_a_cell_that_never_answered_counts_from_when_it_was_first_seen() -> None:
    assert outage_candidate(1, "m/p/a", "availability", None, T - 600, 300, T, SPEC) is None
    never = outage_candidate(1, "m/p/a", "availability", None, T - 3600, 300, T, SPEC)
    assert never is not None and never.details["last_ok_at"] is None
    assert never.details["change_at"] == T - 3600


def test_the_outage_line_says_how_long_and_how_many_runs_failed() -> None:
    down = outage_candidate(1, "m/p/a", "availability", T - 1800, T - 86400, 300, T, SPEC)
    assert down is not None
    filled = dataclasses.replace(down, observed=Counts(60, 60))
    line = format_message(filled, change_at=None, deploy_ids=[], sample="connection_error: refused")
    assert line == (
        "m/p/a availability [availability]: no request answered for 30 min "
        '(60/60 runs failed; interval 300 s); e.g. "connection_error: refused"'
    )
