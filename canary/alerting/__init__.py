"""Alerting: incidents from findings, the webhook outbox, and one receiver module per channel."""
