"""The HTTP API of ``canary serve`` (FastAPI, described by ``/openapi.json``).

Reads are open; every write needs ``Authorization: Bearer <token>`` with the token from
``service.api_token`` (an ``env:NAME`` secret). With no token configured, writes are refused
rather than left open. The Flagger gates only read, so Flagger (which cannot send headers) can
call them without a token.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import anyio
import sqlalchemy as sa
from fastapi import Depends, FastAPI, HTTPException, Query, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncEngine

from canary import __version__
from canary.config.sections import VerdictPolicy
from canary.service.limits import MAX_BODY_BYTES, RequestLimits, validation_error
from canary.service.membership import membership_view
from canary.service.metrics import CONTENT_TYPE_LATEST, ServiceMetrics
from canary.service.status_page import install_status_page
from canary.storage.observations import AVAILABILITY
from canary.storage.observed import observed, settled_before
from canary.storage.tables import AlertDeliveryRow, AlertRow, FindingRow, TargetRow
from canary.verdicts.deploys import (
    CellSelectionError,
    create_deploy,
    deploy_json,
    expand_cells,
    get_deploy,
    list_deploys,
)

MAX_DURATION_S = 7 * 86400.0
CLOCK_SKEW = timedelta(hours=1)  # /api/results counts rows up to this far past our clock
bearer = HTTPBearer(auto_error=False)  # module level: FastAPI resolves annotations in module globals


class DeployRequest(BaseModel):
    """``POST /api/deploys``: what to compare, and for how long."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    # Bounded, so that matching the patterns against every cell stays quick (it runs in the loop).
    canary_cells: list[Annotated[str, Field(min_length=1, max_length=500)]] = Field(
        min_length=1, max_length=1000
    )
    baseline_cells: list[Annotated[str, Field(min_length=1, max_length=500)]] = Field(
        min_length=1, max_length=1000
    )
    started_at: AwareDatetime | None = None
    duration_s: float | None = Field(default=None, gt=0, le=MAX_DURATION_S)


class FlaggerPayload(BaseModel):
    """What Flagger posts to a webhook; ``metadata.deploy`` names the canary deploy (id or name)."""

    name: str = ""
    namespace: str = ""
    phase: str = ""
    metadata: dict[str, str] = {}


@dataclass
class ApiContext:
    """What the API needs from the service around it."""

    engine: AsyncEngine
    metrics: ServiceMetrics
    cells: Sequence[str]
    policy: VerdictPolicy
    token: str | None = None
    ready: Callable[[], bool] = lambda: True
    deploys_changed: Callable[[], Awaitable[None]] | None = None
    backlog: Callable[[], dict[str, Any]] | None = None  # results waiting for the database
    max_body_bytes: int = MAX_BODY_BYTES
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    replica: Callable[[], dict[str, object]] | None = None  # this replica, for /readyz


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(title="canary", version=__version__, description=__doc__)
    # Before authentication and body parsing: size caps, NUL bytes; and 422s that echo little.
    app.add_middleware(RequestLimits, max_body_bytes=ctx.max_body_bytes)
    app.add_exception_handler(RequestValidationError, validation_error)

    def require_token(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if ctx.token is None:
            raise HTTPException(403, "writes are disabled: set service.api_token")
        if creds is None or not secrets.compare_digest(creds.credentials.encode(), ctx.token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    install_status_page(app, lambda: ctx.engine, ctx.clock)  # GET /: the status page for on-call

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "not ready"}})
    async def readyz() -> JSONResponse:
        """Readiness: the scheduler runs and the database answers.

        ``backlog`` counts results waiting for the database; while it is not empty a ready
        replica says ``degraded`` (still 200: it is writing them).
        """
        try:
            with anyio.fail_after(5):
                async with ctx.engine.connect() as conn:
                    await conn.execute(sa.text("SELECT 1"))
            database = True
        except Exception:
            database = False
        ready = database and ctx.ready()
        backlog = ctx.backlog() if ctx.backlog else {"runs": 0}
        status = ("degraded" if backlog["runs"] else "ready") if ready else "not ready"
        body: dict[str, object] = {
            "status": status,
            "database": database,
            "scheduler": ctx.ready(),
            "backlog": backlog,
        }
        if ctx.replica is not None:
            body["replica"] = ctx.replica()
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/api/replicas", tags=["health"])
    async def replicas() -> list[dict[str, Any]]:
        """Every registered replica: live or not, how many cells it probes, whether it leads."""
        return await membership_view(ctx.engine)

    @app.get("/metrics", tags=["health"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus exposition format."""
        return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/results", tags=["results"])
    async def results(
        cell: str | None = None,
        metric: str | None = None,
        window_s: Annotated[float, Query(gt=0, le=30 * 86400)] = 3600.0,
    ) -> list[dict[str, Any]]:
        """Pass rates per cell and metric over the last ``window_s`` seconds."""
        now = ctx.clock()
        async with ctx.engine.connect() as conn:
            # ``observations`` up to date (canary.storage.observed), each pass in the window
            # holding its first score; rows another replica's clock put ahead of ours still count.
            window = observed(
                await settled_before(conn),
                now - timedelta(seconds=window_s),
                now + CLOCK_SKEW,
                cells=None if cell is None else [cell],
            ).subquery()
            n, failures = sa.func.sum(window.c.n).label("n"), sa.func.sum(window.c.failures).label("f")
            query = (
                sa.select(TargetRow.cell, window.c.metric, n, failures)
                .join_from(window, TargetRow, TargetRow.id == window.c.target_id)
                .where(
                    window.c.metric != AVAILABILITY, *([] if metric is None else [window.c.metric == metric])
                )
                .group_by(TargetRow.cell, window.c.metric)
                .order_by(TargetRow.cell, window.c.metric)
            )
            rows = [(c, m, int(n), int(f)) for c, m, n, f in (await conn.execute(query)).all()]
        return [
            {"cell": c, "metric": m, "n": n, "failures": f, "pass_rate": (n - f) / n if n else None}
            for c, m, n, f in rows
        ]

    @app.get("/api/runs", tags=["results"])
    async def runs(
        cell: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> list[dict[str, Any]]:
        """The latest runs, newest first (no output text: ask the database for that)."""
        query = (
            "SELECT r.id, t.cell, p.probe_id, r.started_at, r.status, r.reason, r.http_status,"
            " r.latency_ms, r.served_pool, r.deploy_id FROM runs r JOIN targets t ON t.id = r.target_id"
            " JOIN probes p ON p.id = r.probe_pk WHERE (CAST(:cell AS text) IS NULL OR t.cell = :cell)"
            " ORDER BY r.started_at DESC LIMIT :limit"
        )
        async with ctx.engine.connect() as conn:
            rows = (await conn.execute(sa.text(query), {"cell": cell, "limit": limit})).all()
        return [{**r._asdict(), "started_at": r.started_at.isoformat()} for r in rows]

    @app.get("/api/findings", tags=["results"])
    async def findings(limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        """The latest detection findings, newest first."""
        query = sa.select(FindingRow.__table__).order_by(FindingRow.id.desc()).limit(limit)
        async with ctx.engine.connect() as conn:
            return [dict(r._mapping) for r in (await conn.execute(query)).all()]

    @app.get(
        "/api/findings/{finding_id}", tags=["results"], responses={404: {"description": "no such finding"}}
    )
    async def finding(finding_id: int) -> dict[str, Any]:
        """One finding with its full evidence: what an alert's ``generatorURL`` links to."""
        query = sa.select(FindingRow.__table__).where(FindingRow.id == finding_id)
        async with ctx.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            raise HTTPException(404, f"no finding {finding_id}")
        return dict(row._mapping)

    @app.get("/api/alerts", tags=["alerts"])
    async def alerts(
        state: Literal["open", "pending", "firing", "resolved", "all"] = "open",
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """Alerts, newest first: the open ones (pending or firing) unless ``state`` says otherwise."""
        query = sa.select(AlertRow.__table__).order_by(AlertRow.id.desc()).limit(limit)
        if state == "open":
            query = query.where(AlertRow.state.in_(("pending", "firing")))
        elif state != "all":
            query = query.where(AlertRow.state == state)
        async with ctx.engine.connect() as conn:
            return [dict(r._mapping) for r in (await conn.execute(query)).all()]

    @app.get("/api/alerts/{fingerprint}", tags=["alerts"], responses={404: {"description": "no such alert"}})
    async def alert(fingerprint: str) -> dict[str, Any]:
        """The latest incident with this fingerprint and the state of its deliveries per receiver."""
        query = sa.select(AlertRow.__table__).where(AlertRow.fingerprint == fingerprint)
        deliveries = sa.select(
            AlertDeliveryRow.receiver,
            AlertDeliveryRow.event,
            AlertDeliveryRow.status,
            AlertDeliveryRow.attempts,
            AlertDeliveryRow.last_error,
            AlertDeliveryRow.created_at,
            AlertDeliveryRow.delivered_at,
        ).order_by(AlertDeliveryRow.id)
        async with ctx.engine.connect() as conn:
            row = (await conn.execute(query.order_by(AlertRow.id.desc()).limit(1))).first()
            if row is None:
                raise HTTPException(404, f"no alert {fingerprint!r}")
            sent = (await conn.execute(deliveries.where(AlertDeliveryRow.alert_id == row.id))).all()
        return {**row._mapping, "deliveries": [dict(d._mapping) for d in sent]}

    @app.post("/api/deploys", tags=["deploys"], status_code=201, dependencies=[Depends(require_token)])
    async def start_deploy(body: DeployRequest) -> dict[str, Any]:
        """Register a deploy: burst probes on both sides and judge the canary for ``duration_s``."""
        try:
            # Patterns times cells can be a million matches: off the event loop, so probes go on.
            canary = await anyio.to_thread.run_sync(expand_cells, body.canary_cells, ctx.cells, "canary")
            baseline = await anyio.to_thread.run_sync(
                expand_cells, body.baseline_cells, ctx.cells, "baseline"
            )
            started = body.started_at.astimezone(UTC) if body.started_at else ctx.clock()
            duration = body.duration_s or ctx.policy.default_duration_s
            deploy = await create_deploy(ctx.engine, body.name, canary, baseline, started, duration)
        except CellSelectionError as exc:  # answered in the documented 422 shape, like a schema error
            error = {"loc": ("body", exc.field), "msg": str(exc), "type": "value_error"}
            raise RequestValidationError([error]) from None
        if ctx.deploys_changed is not None:
            await ctx.deploys_changed()
        return deploy_json(deploy)

    @app.get("/api/deploys", tags=["deploys"])
    async def deploys(limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[dict[str, Any]]:
        return [deploy_json(d) for d in await list_deploys(ctx.engine, limit)]

    @app.get("/api/deploys/{deploy}", tags=["deploys"], responses={404: {"description": "no such deploy"}})
    async def deploy_verdict(deploy: str) -> dict[str, Any]:
        """A deploy and its verdict: ``$.verdict`` is PASS, FAIL, INCONCLUSIVE, or PENDING while it runs."""
        found = await get_deploy(ctx.engine, deploy)
        if found is None:
            raise HTTPException(404, f"no deploy {deploy!r}")
        return deploy_json(found)

    async def gate(body: FlaggerPayload, wanted: str) -> JSONResponse:
        key = body.metadata.get("deploy") or body.name
        found = await get_deploy(ctx.engine, key) if key else None
        if found is None:
            return JSONResponse({"detail": f"no deploy {key!r}"}, status_code=404)
        view = deploy_json(found)
        return JSONResponse(view, status_code=200 if view["verdict"] == wanted else 412)

    def gate_responses(wanted: str) -> dict[int | str, dict[str, Any]]:
        return {404: {"description": "no such deploy"}, 412: {"description": f"not {wanted}"}}

    @app.post("/api/flagger/promote", tags=["gates"], responses=gate_responses("PASS"))
    async def flagger_promote(body: FlaggerPayload) -> JSONResponse:
        """Flagger ``confirm-promotion`` webhook: 200 only when the deploy's verdict is PASS."""
        return await gate(body, "PASS")

    @app.post("/api/flagger/rollback", tags=["gates"], responses=gate_responses("FAIL"))
    async def flagger_rollback(body: FlaggerPayload) -> JSONResponse:
        """Flagger ``rollback`` webhook: 200 (roll back) only when the deploy's verdict is FAIL."""
        return await gate(body, "FAIL")

    return app
