"""The API against its own OpenAPI description (schemathesis): generated requests, a real server.

The service's app runs on loopback with a migrated PostgreSQL holding a little data (a pass of
runs, a finding, a deploy). Schemathesis reads ``/openapi.json`` over HTTP and sends requests
generated from it, valid and invalid; every response must be a documented status code with a body
of the documented shape, and no request may cause a 5xx. (Schema-valid bodies may still be
refused: a cell pattern that matches no configured cell is a 422, so "positive data acceptance"
is not checked.)
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import anyio
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance
from schemathesis.generation.case import Case
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.config.sections import VerdictPolicy
from canary.service.api import ApiContext, create_app
from canary.service.metrics import ServiceMetrics
from canary.storage.engine import async_engine
from canary.verdicts.deploys import create_deploy
from tests.conftest import create_test_database, drop_database
from tests.loopback import serve_in_thread
from tests.seeding import add_cells

TOKEN = "schema-t0ken"
CELLS = ["m/p/canary", "m/p/base"]
HEALTH_CHECKS = list(HealthCheck)  # generated bodies are often filtered; that is expected here


async def seed(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await add_cells(conn, CELLS)
    now = datetime.now(UTC)
    await create_deploy(engine, "v1", ["m/p/canary"], ["m/p/base"], now - timedelta(hours=1), 600.0)


@pytest.fixture(scope="module")
def api_schema(pg_server: str) -> Iterator[schemathesis.schemas.BaseSchema]:
    url = create_test_database(pg_server)
    seeding = async_engine(url)
    anyio.run(seed, seeding)
    anyio.run(seeding.dispose)
    # The server's engine is created here but connects only inside the server's own event loop.
    engine = async_engine(url)
    ctx = ApiContext(engine, ServiceMetrics(), CELLS, VerdictPolicy(min_samples=5), token=TOKEN)
    try:
        with serve_in_thread(create_app(ctx)) as server:
            yield schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    finally:
        drop_database(pg_server, url)


def test_every_operation_answers_as_its_openapi_description_says(
    api_schema: schemathesis.schemas.BaseSchema,
) -> None:
    # One Hypothesis run per operation (schemathesis's pytest plugin fails on pytest 9).
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {"GET /api/deploys/{deploy}", "POST /api/deploys", "GET /api/findings/{finding_id}"} <= {
        op.label for op in operations
    }
    with httpx.Client(timeout=30.0) as client:
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(
                max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
            )
            def answers_as_described(case: Case) -> None:
                case.validate_response(send(client, case), excluded_checks=[positive_data_acceptance])

            answers_as_described()


def send(client: httpx.Client, case: Case) -> httpx.Response:
    """Send a generated case with httpx (the requests transport trips over urllib3-future, which
    grafana-client's niquests installs in place of urllib3)."""
    kwargs = case.as_transport_kwargs(headers={"Authorization": f"Bearer {TOKEN}"})
    assert not kwargs.pop("cookies", None)  # no operation takes cookies
    if "data" in kwargs:  # requests' raw body is httpx's content
        kwargs["content"] = kwargs.pop("data")
    return client.request(**kwargs)
