"""Store a sampler-check report as one ``sampler_checks`` row (sync: one insert after a sweep)."""

from __future__ import annotations

import sqlalchemy as sa

from canary.sampler_check.report import SamplerCheckReport
from canary.storage.engine import sqlalchemy_url
from canary.storage.tables import SamplerCheckRow

COLUMNS = (
    "sampler", "device", "jax_version", "jaxlib_version", "passed", "duration_s", "returns_kept",
    "config", "violations", "checked", "reproducers",
)  # fmt: skip


def store_report(url: str, report: SamplerCheckReport) -> int:
    """Insert the report; returns the row id."""
    values = {k: v for k, v in report.to_dict().items() if k in COLUMNS}
    engine = sa.create_engine(sqlalchemy_url(url))
    try:
        with engine.begin() as conn:
            row_id = conn.execute(
                sa.insert(SamplerCheckRow).values(values).returning(SamplerCheckRow.id)
            ).scalar_one()
    finally:
        engine.dispose()
    return int(row_id)
