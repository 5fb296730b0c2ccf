"""dashboards: per-minute and per-hour rollups, and the views dashboards and the status page read

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 01:10:00.000000

Dashboards query only the ``v_*`` views below, so a change to the tables behind them changes a
view here, not a dashboard. Time series read the rollup tables (maintained by
``canary.storage.rollups.refresh_rollups``), never raw runs.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLLUP_VIEWS = {
    # (view, table, time column)
    "v_score_minute": ("score_rollup_minute", "minute"),
    "v_score_hour": ("score_rollup_hour", "hour"),
    "v_run_minute": ("run_rollup_minute", "minute"),
    "v_run_hour": ("run_rollup_hour", "hour"),
}

# Health of a cell right now: each metric's last 15 minutes against the same cell's 24 hours
# before them. A display heuristic, not detection: ``sick`` needs at least 3 failures and a
# one-sided z of 4 (``warn``: 2 failures, z 2.5) against a baseline floored at 0.5 %, so a
# metric that never failed before still needs several failures. Open alerts from detection
# override it (firing -> sick, pending -> at least warn). ``nodata``: no scores in 15 minutes.
CELL_HEALTH = """
CREATE VIEW v_cell_health AS
WITH recent AS (
    SELECT target_id, metric, sum(runs)::int AS runs, sum(failures)::int AS failures
    FROM score_rollup_minute
    WHERE minute >= now() - interval '15 minutes'
    GROUP BY target_id, metric
), base AS (
    SELECT target_id, metric, sum(runs)::int AS runs, sum(failures)::int AS failures
    FROM score_rollup_hour
    WHERE hour >= date_trunc('hour', now() - interval '15 minutes') - interval '24 hours'
      AND hour < date_trunc('hour', now() - interval '15 minutes')
    GROUP BY target_id, metric
), rated AS (
    SELECT r.target_id, r.metric, r.runs, r.failures,
           r.failures::float8 / r.runs AS rate,
           coalesce(b.failures::float8 / nullif(b.runs, 0), 0) AS baseline_rate,
           least(greatest(coalesce(b.failures::float8 / nullif(b.runs, 0), 0), 0.005), 0.995) AS p0
    FROM recent r LEFT JOIN base b USING (target_id, metric)
    WHERE r.runs > 0
), judged AS (
    SELECT *,
           CASE
               WHEN failures >= 3 AND (failures - runs * p0) / sqrt(runs * p0 * (1 - p0)) >= 4 THEN 2
               WHEN failures >= 2 AND (failures - runs * p0) / sqrt(runs * p0 * (1 - p0)) >= 2.5 THEN 1
               ELSE 0
           END AS severity
    FROM rated
), worst AS (
    SELECT DISTINCT ON (target_id) target_id, metric, severity, rate, baseline_rate, runs, failures
    FROM judged
    ORDER BY target_id, severity DESC, rate - baseline_rate DESC, metric
), alerting AS (
    SELECT target_id,
           count(*)::int AS open_alerts,
           max(CASE state WHEN 'firing' THEN 2 ELSE 1 END) AS severity,
           (array_agg(metric ORDER BY state = 'firing' DESC, started_at))[1] AS metric
    FROM alerts
    WHERE state IN ('pending', 'firing')
    GROUP BY target_id
)
SELECT t.id AS target_id, t.cell, t.model, t.platform, t.pool,
       greatest(coalesce(a.severity, -1), coalesce(w.severity, -1)) AS severity,
       CASE greatest(coalesce(a.severity, -1), coalesce(w.severity, -1))
           WHEN 2 THEN 'sick' WHEN 1 THEN 'warn' WHEN 0 THEN 'ok' ELSE 'nodata'
       END AS status,
       CASE WHEN coalesce(a.severity, 0) > coalesce(w.severity, 0) THEN a.metric ELSE w.metric END
           AS worst_metric,
       -- rates belong to the worst metric by rate; an alert's metric shows without them
       CASE WHEN coalesce(a.severity, 0) > coalesce(w.severity, 0) THEN NULL ELSE w.rate END AS recent_rate,
       CASE WHEN coalesce(a.severity, 0) > coalesce(w.severity, 0) THEN NULL ELSE w.baseline_rate END
           AS baseline_rate,
       w.runs AS recent_runs, w.failures AS recent_failures,
       coalesce(a.open_alerts, 0) AS open_alerts
FROM targets t
LEFT JOIN worst w ON w.target_id = t.id
LEFT JOIN alerting a ON a.target_id = t.id
WHERE t.last_seen >= now() - interval '7 days' OR w.target_id IS NOT NULL OR a.target_id IS NOT NULL
"""

OPEN_ALERTS = """
CREATE VIEW v_open_alerts AS
SELECT a.id, a.state, t.cell, t.model, t.platform, t.pool, a.metric, a.started_at, a.fired_at,
       a.last_active_at, a.summary, f.message AS finding, f.sample_output, f.deploy_ids
FROM alerts a
JOIN targets t ON t.id = a.target_id
LEFT JOIN findings f ON f.id = a.finding_id
WHERE a.state IN ('pending', 'firing')
"""

# One row per failed score with what a person needs to see the failure: the offending characters
# (unexpected_script), the syntax error and its line (code_syntax), expected vs answered, the
# pool that served a misrouted request. Output text is clipped; the run keeps it whole.
FAILED_SAMPLES = r"""
CREATE VIEW v_failed_samples AS
SELECT s.created_at AS time, s.id AS score_id, s.run_id, t.id AS target_id, t.cell, t.model,
       t.platform, t.pool, s.metric, p.probe_id, r.served_pool, r.deploy_id,
       CASE s.metric
           WHEN 'unexpected_script' THEN (
               SELECT string_agg(sp->>'text', ' ') FROM jsonb_array_elements(s.detail->'spans') sp)
           WHEN 'code_syntax' THEN s.detail->>'snippet'
           WHEN 'known_answer' THEN s.detail->>'answer'
           WHEN 'long_context_recall' THEN s.detail->>'answer'
           WHEN 'routing' THEN s.detail->>'served_pool'
           WHEN 'determinism' THEN s.detail->>'output'
           WHEN 'argmax_conformance' THEN s.detail #>> '{steps,0,token}'
           ELSE NULL
       END AS offending,
       CASE s.metric
           WHEN 'unexpected_script' THEN format('%s unexpected character(s) %s; allowed: %s',
               s.detail->>'count', s.detail->>'scripts', s.detail->>'allowed')
           WHEN 'code_syntax' THEN format('%s syntax error at line %s, column %s: %s',
               s.detail->>'language', s.detail->>'line', s.detail->>'column', s.detail->>'message')
           WHEN 'known_answer' THEN format('expected %s', s.detail->>'expected')
           WHEN 'long_context_recall' THEN format('expected %s', s.detail->>'expected')
           WHEN 'routing' THEN format('served by %s, expected %s',
               s.detail->>'served_pool', s.detail->>'expected_pool')
           WHEN 'determinism' THEN format('diverges from the reference at character %s: %s',
               s.detail->>'first_divergent_char', s.detail->>'reference')
           WHEN 'argmax_conformance' THEN format('%s of %s steps violate %s',
               s.detail->>'violations', s.detail->>'steps_checked', s.detail->>'mode')
           ELSE left(s.detail::text, 200)
       END AS explanation,
       coalesce(s.detail #>> '{spans,0,context}', s.detail->>'snippet') AS context,
       left(r.output_text, 500) AS output
FROM scores s
JOIN runs r ON r.id = s.run_id
JOIN targets t ON t.id = s.target_id
JOIN probes p ON p.id = s.probe_pk
WHERE NOT s.passed
"""

DEPLOY_VERDICTS = """
CREATE VIEW v_deploy_verdicts AS
SELECT d.id, d.name, d.status,
       CASE WHEN d.status = 'running' THEN 'PENDING' ELSE coalesce(d.details->>'verdict', 'NONE') END
           AS verdict,
       d.details->>'verdict' AS latest_verdict,
       coalesce(d.details->>'status_reason', d.details->>'reason', '') AS reason,
       d.started_at, d.started_at + make_interval(secs => coalesce(d.duration_s, 0)) AS ends_at,
       array_to_string(d.canary_cells, ', ') AS canary_cells,
       array_to_string(d.baseline_cells, ', ') AS baseline_cells,
       (d.details->>'evaluated_at')::timestamptz AS evaluated_at,
       coalesce(jsonb_array_length(d.details->'metrics'), 0) AS metrics,
       (SELECT count(*) FROM jsonb_array_elements(coalesce(d.details->'metrics', '[]')) m
         WHERE m->>'outcome' = 'FAIL')::int AS failed_metrics,
       d.canary_cells = '{}' AND d.baseline_cells = '{}' AS annotation_only,
       d.created_by
FROM deploys d
"""

DEPLOY_METRICS = """
CREATE VIEW v_deploy_metric_results AS
SELECT d.id AS deploy_id, d.name, d.started_at, m->>'metric' AS metric, m->>'kind' AS kind,
       m->>'outcome' AS outcome, m->>'reason' AS reason,
       (m->>'canary_n')::int AS canary_n, (m->>'baseline_n')::int AS baseline_n,
       (m->>'canary_rate')::float8 AS canary_rate, (m->>'baseline_rate')::float8 AS baseline_rate,
       (m->>'effect')::float8 AS effect, (m->>'ci_low')::float8 AS ci_low,
       (m->>'ci_high')::float8 AS ci_high, (m->>'p_value')::float8 AS p_value,
       m->>'method' AS method, (m->>'critical')::boolean AS critical
FROM deploys d
CROSS JOIN LATERAL jsonb_array_elements(coalesce(d.details->'metrics', '[]')) m
"""

VIEWS = ["v_cell_health", "v_open_alerts", "v_failed_samples", "v_deploy_verdicts",
         "v_deploy_metric_results", *ROLLUP_VIEWS]


def upgrade() -> None:
    for name, grain in (("score_rollup_minute", "minute"), ("score_rollup_hour", "hour")):
        op.create_table(name,
        sa.Column('target_id', sa.Integer(), nullable=False),
        sa.Column('metric', sa.Text(), nullable=False),
        sa.Column(grain, sa.DateTime(timezone=True), nullable=False),
        sa.Column('runs', sa.Integer(), nullable=False),
        sa.Column('failures', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('target_id', 'metric', grain, name=op.f(f'pk_{name}'))
        )
        op.create_index(f'ix_{name}_brin', name, [grain], unique=False, postgresql_using='brin')
    for name, grain in (("run_rollup_minute", "minute"), ("run_rollup_hour", "hour")):
        op.create_table(name,
        sa.Column('target_id', sa.Integer(), nullable=False),
        sa.Column(grain, sa.DateTime(timezone=True), nullable=False),
        sa.Column('runs', sa.Integer(), nullable=False),
        sa.Column('errors', sa.Integer(), nullable=False),
        sa.Column('latency_p50_ms', sa.Float(), nullable=True),
        sa.Column('latency_p95_ms', sa.Float(), nullable=True),
        sa.Column('latency_max_ms', sa.Float(), nullable=True),
        sa.Column('pools', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.PrimaryKeyConstraint('target_id', grain, name=op.f(f'pk_{name}'))
        )
        op.create_index(f'ix_{name}_brin', name, [grain], unique=False, postgresql_using='brin')
    op.create_index('ix_scores_failed_target_created', 'scores', ['target_id', sa.literal_column('created_at DESC')], unique=False, postgresql_where=sa.text('NOT passed'))

    for view, (table, grain) in ROLLUP_VIEWS.items():
        op.execute(
            f"CREATE VIEW {view} AS SELECT r.*, r.{grain} AS time, t.cell, t.model, t.platform, t.pool"
            f" FROM {table} r JOIN targets t ON t.id = r.target_id"
        )
    for sql in (CELL_HEALTH, OPEN_ALERTS, FAILED_SAMPLES, DEPLOY_VERDICTS, DEPLOY_METRICS):
        op.execute(sql)


def downgrade() -> None:
    for view in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {view}")
    op.drop_index('ix_scores_failed_target_created', table_name='scores', postgresql_where=sa.text('NOT passed'))
    for name, grain in (("run_rollup_hour", "hour"), ("run_rollup_minute", "minute"),
                        ("score_rollup_hour", "hour"), ("score_rollup_minute", "minute")):
        op.drop_index(f'ix_{name}_brin', table_name=name, postgresql_using='brin')
        op.drop_table(name)
