"""``canary sampler-check`` results."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from canary.storage.tables.base import Base


class SamplerCheckRow(Base):
    """One ``canary sampler-check`` run: which sampler, on which device and JAX, and what it found.

    A compiler or runtime upgrade is checked like any deploy; the history of this table is the
    evidence that the sampler stayed conformant (or when it stopped).
    """

    __tablename__ = "sampler_checks"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(server_default=sa.func.now())
    sampler: Mapped[str] = mapped_column(sa.Text)
    device: Mapped[str] = mapped_column(sa.Text)
    jax_version: Mapped[str] = mapped_column(sa.Text)
    jaxlib_version: Mapped[str] = mapped_column(sa.Text)
    passed: Mapped[bool] = mapped_column(sa.Boolean)
    duration_s: Mapped[float] = mapped_column(sa.Float)
    returns_kept: Mapped[bool] = mapped_column(sa.Boolean)
    config: Mapped[dict[str, Any]]
    violations: Mapped[dict[str, Any]]
    checked: Mapped[dict[str, Any]]
    reproducers: Mapped[dict[str, Any]]

    __table_args__ = (sa.Index("ix_sampler_checks_sampler_created", "sampler", sa.text("created_at DESC")),)
