"""Prometheus metrics of one ``canary serve`` replica, on a registry of its own.

Counters are fed from each pass's summary as it ends (no database query at scrape time);
gauges that need the database (open alerts, running deploys) are refreshed by the service's
background loop. A private registry keeps two services in one process (tests) apart.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from canary.probing.summary import PassSummary
from canary.storage.backlog import ResultBacklog

LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
PASS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

__all__ = ["CONTENT_TYPE_LATEST", "ServiceMetrics"]


class ServiceMetrics:
    """Every series the service exports; one instance per service."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs = Counter(
            "canary_probe_runs", "Probe requests stored, by cell and status.", ["cell", "status"], registry=r
        )
        self.failures = Counter(
            "canary_probe_failures",
            "Failed probe requests by cell and reason.",
            ["cell", "reason"],
            registry=r,
        )
        self.checks = Counter(
            "canary_score_checks", "Scored outcomes by cell and metric.", ["cell", "metric"], registry=r
        )
        self.check_failures = Counter(
            "canary_score_failures",
            "Scored outcomes that failed, by cell and metric.",
            ["cell", "metric"],
            registry=r,
        )
        self.scoring_errors = Counter(
            "canary_scoring_errors",
            "Answered runs a scorer raised on (stored with reason scoring_error), by cell and scorer.",
            ["cell", "scorer"],
            registry=r,
        )
        self.pass_rate = Gauge(
            "canary_score_pass_rate",
            "Pass rate of the last pass, by cell and metric.",
            ["cell", "metric"],
            registry=r,
        )
        self.pass_seconds = Histogram(
            "canary_pass_duration_seconds",
            "Duration of one scheduled pass.",
            ["probe_set"],
            buckets=PASS_BUCKETS,
            registry=r,
        )
        self.pass_timeouts = Counter(
            "canary_pass_timeouts",
            "Passes cut off by their time limit (in-flight runs stored as cancelled).",
            ["cell"],
            registry=r,
        )
        self.pass_errors = Counter(
            "canary_pass_errors", "Passes that raised (database down, bug).", ["cell"], registry=r
        )
        self.lag = Histogram(
            "canary_scheduler_lag_seconds",
            "Delay between a job's scheduled time and its start.",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.missed = Counter(
            "canary_scheduler_missed_runs", "Runs skipped past the misfire grace time.", registry=r
        )
        self.overlaps = Counter(
            "canary_scheduler_overlaps", "Runs skipped because the previous one was still going.", registry=r
        )
        self.jobs = Gauge("canary_scheduler_jobs", "Jobs this replica schedules.", ["kind"], registry=r)
        self.in_flight = Gauge("canary_scheduler_in_flight", "Passes running now.", registry=r)
        self.pass_limit = Gauge(
            "canary_scheduler_pass_limit",
            "Passes allowed to run at once, lowered while the event loop lags (schedule.max_loop_lag_s).",
            registry=r,
        )
        self.loop_lag = Histogram(
            "canary_event_loop_lag_seconds",
            "How late the event loop wakes a 0.1 s sleep (CPU saturation of this replica).",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.leader = Gauge(
            "canary_singleton_leader", "1 when this replica runs detection and alert dispatch.", registry=r
        )
        self.open_alerts = Gauge("canary_open_alerts", "Alerts currently firing.", registry=r)
        self.running_deploys = Gauge("canary_running_deploys", "Deploys under a verdict now.", registry=r)
        self.backlog_runs = Gauge(
            "canary_result_backlog_runs", "Results waiting for an unreachable database.", registry=r
        )
        self.backlog_bytes = Gauge(
            "canary_result_backlog_spooled_bytes", "Backlog bytes spilled to the spool file.", registry=r
        )
        self.backlog_oldest = Gauge(
            "canary_result_backlog_oldest_seconds", "Age of the oldest result waiting.", registry=r
        )
        self.backlog_dropped = Counter(
            "canary_result_backlog_dropped_runs",
            "Results dropped unstored: expired (outage past service.outage_buffer_s), rejected, full.",
            ["reason"],
            registry=r,
        )
        self.leader_epoch = Gauge(
            "canary_singleton_leader_epoch", "Epoch of the leader lease this replica last took.", registry=r
        )
        self.duty_steps = Counter(
            "canary_singleton_steps", "Singleton duty iterations completed, by duty.", ["duty"], registry=r
        )
        self.fenced_commits = Counter(
            "canary_singleton_fenced_commits",
            "Singleton duty commits refused because this replica no longer held the leader lease.",
            registry=r,
        )
        self.replicas_live = Gauge(
            "canary_replicas_live", "Replicas with a recent heartbeat, as this replica last saw.", registry=r
        )
        self.replica_cells = Gauge(
            "canary_replica_cells", "Cells this replica holds a claim on and probes.", registry=r
        )
        self.membership_errors = Counter(
            "canary_membership_errors", "Heartbeats that failed (database unreachable).", registry=r
        )
        self.duty_errors = Counter(
            "canary_singleton_errors", "Singleton duty iterations that raised.", ["duty"], registry=r
        )
        # What the example alert rules (examples/prometheus/canary-rules.yml) watch.
        self.last_run = Gauge(
            "canary_cell_last_run_timestamp_seconds",
            "Unix time of the last pass that stored runs for the cell on this replica.",
            ["cell"],
            registry=r,
        )
        self.cell_interval = Gauge(
            "canary_cell_probe_interval_seconds",
            "Shortest probe interval among the cell's jobs on this replica.",
            ["cell"],
            registry=r,
        )
        self.outbox_pending = Gauge(
            "canary_outbox_pending", "Alert notifications not yet delivered (all replicas).", registry=r
        )
        self.outbox_oldest = Gauge(
            "canary_outbox_oldest_pending_age_seconds",
            "Age of the oldest undelivered alert notification; 0 when none is pending.",
            registry=r,
        )

    def watch_backlog(self, backlog: ResultBacklog) -> None:
        """Read the backlog's gauges at scrape time and count its drops."""
        self.backlog_runs.set_function(lambda: backlog.runs)
        self.backlog_bytes.set_function(lambda: backlog.spooled_bytes)
        self.backlog_oldest.set_function(backlog.oldest_age_s)
        backlog.on_drop = lambda reason, runs: self.backlog_dropped.labels(reason).inc(runs)

    def observe_pass(self, probe_set: str, summary: PassSummary) -> None:
        """Fold one finished pass into the counters."""
        self.pass_seconds.labels(probe_set).observe(summary.duration_s)
        ended = time.time()
        for cell, c in summary.cells.items():
            if c.runs:
                self.last_run.labels(cell).set(ended)
            if c.ok:
                self.runs.labels(cell, "ok").inc(c.ok)
            if c.runs - c.ok:
                self.runs.labels(cell, "error").inc(c.runs - c.ok)
            for reason, count in c.failures.items():
                self.failures.labels(cell, reason).inc(count)
            for scorer, count in c.scoring_errors.items():
                self.scoring_errors.labels(cell, scorer).inc(count)
            for metric, total in c.metric_total.items():
                failed = total - c.metric_passed[metric]
                self.checks.labels(cell, metric).inc(total)
                if failed:
                    self.check_failures.labels(cell, metric).inc(failed)
                self.pass_rate.labels(cell, metric).set(c.metric_passed[metric] / total)

    def render(self) -> bytes:
        return generate_latest(self.registry)
