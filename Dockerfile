# canary service image (the reference fleet's JAX is included so the same image can run `canary fleet`).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY canary ./canary
COPY migrations ./migrations
COPY probes ./probes
COPY scenarios ./scenarios
COPY dashboards ./dashboards
RUN pip install --no-cache-dir -e '.[fleet,dashboards]'
ENTRYPOINT ["canary"]
CMD ["--help"]
