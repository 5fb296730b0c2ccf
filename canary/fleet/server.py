"""The fleet's HTTP server: one loopback port, every platform, pool and front door under it.

URL layout (``{base}`` is ``http://HOST:PORT/{platform}/{pool}`` for a pool and
``http://HOST:PORT/{platform}`` for the platform's front door)::

    POST {base}/v1/chat/completions   OpenAI chat (logprobs, top_logprobs)
    POST {base}/v1/completions        OpenAI legacy completions (logprobs: n)
    POST {base}/v1/messages           Anthropic Messages
    GET  {base}/v1/models
    GET  /admin/state                 platforms, faults, counters, scenario time line
    POST /admin/faults                install a fault setting (a FaultSpec as JSON)
    DELETE /admin/faults              clear every fault
    GET  /healthz

Every answer carries ``x-served-platform``, ``x-served-pool`` and ``x-served-replica``; the
front door reads ``x-session-key`` to keep a session on one pool and replica.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as HttpRoute

from canary.errors import ConfigError
from canary.fleet import api
from canary.fleet.config import FaultSpec, FleetConfig, PlatformSpec, default_fleet_config
from canary.fleet.engine import BatchEngine, Generation, GenerationRequest
from canary.fleet.faults import FaultState, Route, pick_replica, route, row_faults
from canary.fleet.forced import echo_logprobs
from canary.fleet.model import AnswerBook, SyntheticModel
from canary.fleet.vocab import build_vocabulary, tokenize
from canary.probing.catalog import Catalog, load_catalog
from canary.probing.equivalence import EquivalenceCatalog, default_equivalence_dir, load_equivalence

SESSION_HEADER = "x-session-key"
_PARSERS = {
    "chat/completions": api.parse_chat,
    "completions": api.parse_completions,
    "messages": api.parse_messages,
}
_RENDER = {
    "chat/completions": api.chat_response,
    "completions": api.completions_response,
    "messages": api.messages_response,
}


def count_tokens(text: str) -> int:
    """Prompt tokens: exact for ordinary prompts, estimated (4 characters a token) for haystacks."""
    return len(tokenize(text)) if len(text) < 20_000 else len(text) // 4


class Fleet:
    """Models, pools, fault state and the decoding engine behind the HTTP surface."""

    def __init__(self, config: FleetConfig | None = None, catalog: Catalog | None = None) -> None:
        self.config = config or default_fleet_config()
        if catalog is None:
            try:
                catalog = load_catalog(
                    None if self.config.probes_dir is None else Path(self.config.probes_dir)
                )
            except ConfigError:
                catalog = None  # no catalog: every prompt gets a generic answer
        self.book = AnswerBook(catalog, _equivalence_catalog(self.config.probes_dir))
        self.vocab = build_vocabulary(self.book.texts())
        self.models = {m.name: SyntheticModel(m, self.vocab) for m in self.config.models}
        self.state = FaultState(self.config)
        self.engine = BatchEngine(self.vocab, self.config.max_batch)
        self.rng = np.random.default_rng()
        self.scenario: Any = None  # a ScenarioRunner when one is driving the faults

    async def serve(
        self,
        endpoint: str,
        body: dict[str, Any],
        platform: PlatformSpec,
        pool: str | None,
        session: str | None,
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """Answer one API request: parse, route, decode, render. Raises api.ApiError."""
        request = _PARSERS[endpoint](body)
        model = self.models.get(request.model)
        if model is None:
            message = f"The model `{request.model}` does not exist or you do not have access to it."
            raise api.ApiError(404, message, param="model", code="model_not_found")
        prompt_tokens = count_tokens(request.input_text)
        rng = (
            np.random.default_rng(request.seed)
            if request.seed is not None
            else np.random.default_rng(self.rng.integers(2**63))
        )
        if pool is None:
            chosen = route(self.state, platform, model.spec.name, prompt_tokens, session, rng)
        else:
            spec = platform.pool(pool)
            assert spec is not None
            chosen = Route(spec, pick_replica(spec, platform.name, session, rng))
        forced = self.book.forced.get(request.prompt) if request.echo else None
        answer = forced[0] if forced is not None else self.book.lookup(request.prompt)
        plan = model.plan(answer)
        faults = row_faults(
            self.state, platform.name, chosen, model.spec.name, plan, rng, offset=prompt_tokens
        )
        top_k = min((k for k in (chosen.pool.top_k, request.top_k) if k > 0), default=0)
        job = GenerationRequest(
            model=model,
            plan=plan,
            replica=f"{platform.name}/{chosen.replica_name()}",
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            top_k=top_k,
            logprobs=request.logprobs,
            stop=request.stop,
            dtype=chosen.pool.dtype,
            faults=faults,
        )
        if forced is not None or request.max_tokens == 0:
            # A forced continuation is a complete answer: what follows it is the end of the text.
            generation = Generation("", [], [] if request.logprobs >= 0 else None, "stop", [])
        else:
            generation = await asyncio.wrap_future(self.engine.submit(job))
        if request.echo and request.logprobs >= 0:
            generation.prompt_logprobs = echo_logprobs(
                model, self.book, request.prompt, faults, chosen.pool.dtype, request.logprobs
            )
        self.state.served[f"{platform.name}/{chosen.replica_name()}"] += 1
        if chosen.misrouted:
            self.state.misrouted[platform.name] += 1
        headers = {
            "x-served-platform": platform.name,
            "x-served-pool": chosen.pool.name,
            "x-served-replica": chosen.replica_name(),
        }
        return _RENDER[endpoint](request, generation, prompt_tokens), headers

    def state_json(self) -> dict[str, Any]:
        return {
            "platforms": [p.model_dump(mode="json") for p in self.config.platforms],
            "models": [m.model_dump(mode="json") for m in self.config.models],
            "faults": [f.model_dump(mode="json") for f in self.state.snapshot()],
            "served": dict(self.state.served),
            "misrouted": dict(self.state.misrouted),
            "engine": {"steps": self.engine.steps, "tokens": self.engine.tokens_generated},
            "scenario": self.scenario.status() if self.scenario is not None else None,
        }


def _equivalence_catalog(probes_dir: str | None) -> EquivalenceCatalog | None:
    """The equivalence probes beside the catalog (``probes/equivalence/``), if there are any."""
    directory = default_equivalence_dir() if probes_dir is None else Path(probes_dir) / "equivalence"
    try:
        return load_equivalence(directory)
    except ConfigError:
        return None


def _error(endpoint: str, err: api.ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    body = api.anthropic_error(err) if endpoint == "messages" else api.openai_error(err)
    return JSONResponse(body, status_code=err.status, headers=headers)


def build_app(fleet: Fleet) -> Starlette:
    """The ASGI application serving ``fleet``."""

    async def dispatch(request: Request) -> Response:
        parts = [p for p in request.url.path.split("/") if p]
        platform = fleet.config.platform(parts[0]) if parts else None
        pool = parts[1] if len(parts) > 1 and parts[1] != "v1" else None
        rest = parts[2:] if pool else parts[1:]
        endpoint = "/".join(rest[1:]) if rest[:1] == ["v1"] else ""
        if platform is None or (pool is not None and platform.pool(pool) is None) or not endpoint:
            return _error(endpoint, api.ApiError(404, f"no such route: {request.url.path}"))
        if endpoint == "models":
            if request.method != "GET":
                return _error(endpoint, api.ApiError(405, "use GET"))
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "canary-fleet"} for m in fleet.models
            ]
            return JSONResponse({"object": "list", "data": data})
        if endpoint not in _PARSERS:
            return _error(endpoint, api.ApiError(404, f"no such endpoint: /v1/{endpoint}"))
        if request.method != "POST":
            return _error(endpoint, api.ApiError(405, f"use POST for /v1/{endpoint}"))
        try:
            body = json.loads(await request.body())
            if not isinstance(body, dict):
                raise api.ApiError(400, "the request body must be a JSON object")
            if endpoint == "messages" and "anthropic-version" not in request.headers:
                raise api.ApiError(400, "anthropic-version: header is required")
            payload, headers = await fleet.serve(
                endpoint, body, platform, pool, request.headers.get(SESSION_HEADER) or None
            )
        except json.JSONDecodeError as exc:
            return _error(endpoint, api.ApiError(400, f"invalid JSON body: {exc.msg}"))
        except api.ApiError as err:
            return _error(endpoint, err)
        return JSONResponse(payload, headers=headers)

    async def state(request: Request) -> Response:
        return JSONResponse(fleet.state_json())

    async def faults(request: Request) -> Response:
        if request.method == "DELETE":
            fleet.state.clear()
            return JSONResponse(fleet.state_json())
        try:
            raw = json.loads(await request.body())
            for item in raw if isinstance(raw, list) else [raw]:
                fleet.state.set(FaultSpec.model_validate(item))
        except ValidationError as exc:
            return JSONResponse({"error": exc.errors(include_url=False)[0]["msg"]}, status_code=400)
        except ValueError as exc:  # JSONDecodeError included, and unknown platform/pool/model
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(fleet.state_json())

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    routes = [
        HttpRoute("/admin/state", state, methods=["GET"]),
        HttpRoute("/admin/faults", faults, methods=["POST", "DELETE"]),
        HttpRoute("/healthz", healthz, methods=["GET"]),
        HttpRoute("/{path:path}", dispatch, methods=["GET", "POST"]),
    ]
    return Starlette(routes=routes)
