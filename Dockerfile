# canary service image (the reference fleet's JAX is included so the same image can run `canary fleet`).
# Stage 1 builds the wheel; the probes, migrations, dashboards and scenarios copied here go into it
# as package data (canary/_data/, see setup.py). Stage 2 installs only that wheel, not a source tree.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md alembic.ini ./
COPY canary ./canary
COPY migrations ./migrations
COPY probes ./probes
COPY scenarios ./scenarios
COPY dashboards ./dashboards
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM python:3.11-slim
WORKDIR /app
COPY --from=build /dist /tmp/dist
RUN set -e; wheel="$(ls /tmp/dist/llm_quality_canary-*.whl)"; \
    pip install --no-cache-dir "${wheel}[fleet,dashboards]"; \
    rm -rf /tmp/dist
ENTRYPOINT ["canary"]
CMD ["--help"]
