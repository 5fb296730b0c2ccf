"""Replica membership, cell claims and the leader lease (:mod:`canary.service.membership`,
:mod:`canary.service.leadership`). Every deadline is written and compared on the database's
clock (``now()``), so replicas whose clocks disagree still agree on who is alive."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from canary.storage.tables.base import Base


class ReplicaRow(Base):
    """One ``canary serve`` process, alive while its heartbeat is younger than its own ``ttl_s``
    (so a reader, the status page or Grafana, needs no configuration to tell who is alive).

    ``shard`` is the static ``--shard i/N`` of a replica started with one; NULL means the replica
    takes a share of the cells over the live members (rendezvous hashing).
    """

    __tablename__ = "replicas"

    id: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    host: Mapped[str] = mapped_column(sa.Text)
    pid: Mapped[int] = mapped_column(sa.Integer)
    shard: Mapped[str | None] = mapped_column(sa.Text)
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]
    ttl_s: Mapped[float] = mapped_column(sa.Float)  # live while heartbeat_at + ttl_s is in the future


class CellClaimRow(Base):
    """The replica allowed to probe a cell until ``expires_at``; renewed with every heartbeat.

    A claim changes hands only once it has expired or been released, so no cell is probed by two
    replicas at once.
    """

    __tablename__ = "cell_claims"

    cell: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    replica_id: Mapped[str] = mapped_column(sa.ForeignKey("replicas.id", ondelete="CASCADE"))
    expires_at: Mapped[datetime]

    __table_args__ = (sa.Index("ix_cell_claims_replica_id", "replica_id"),)


class LeaderLeaseRow(Base):
    """The singleton duties' lease: ``holder`` leads until ``deadline``; ``epoch`` counts hand-overs
    and fences the writes of an old holder (:class:`canary.service.leadership.LeaderLease`)."""

    __tablename__ = "leader_lease"

    name: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    holder: Mapped[str | None] = mapped_column(sa.Text)
    epoch: Mapped[int] = mapped_column(sa.BigInteger, server_default="0")
    deadline: Mapped[datetime | None]
    acquired_at: Mapped[datetime | None]
