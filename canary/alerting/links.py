"""Where an alert's evidence lives in the API: notifications and the status page link the same page.

Import-light on purpose: the status page imports it on the service's start-up path, where
detection's statistics (scipy) must not load.
"""

from __future__ import annotations


def evidence_path(finding_id: int | None, fingerprint: str) -> str:
    """The API path (relative, no leading slash) of the finding behind an alert, else of the alert."""
    return f"api/findings/{finding_id}" if finding_id else f"api/alerts/{fingerprint}"
