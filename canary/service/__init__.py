"""The long-running service: app and leadership, HTTP API, status page and /metrics."""
