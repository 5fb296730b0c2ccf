"""detection and alerts: deploys, findings, alerts, alert_deliveries (outbox), delivery_attempts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 00:25:27.612521
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('deploys',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('canary_cells', postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False),
    sa.Column('baseline_cells', postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('duration_s', sa.Float(), nullable=True),
    sa.Column('status', sa.Text(), server_default='running', nullable=False),
    sa.Column('created_by', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('details', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deploys'))
    )
    op.create_index('ix_deploys_started_at', 'deploys', ['started_at'], unique=False)
    op.create_table('findings',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('target_id', sa.Integer(), nullable=False),
    sa.Column('cell', sa.Text(), nullable=False),
    sa.Column('metric', sa.Text(), nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('baseline_rate', sa.Float(), nullable=False),
    sa.Column('observed_rate', sa.Float(), nullable=False),
    sa.Column('effect', sa.Float(), nullable=False),
    sa.Column('effect_ci_low', sa.Float(), nullable=False),
    sa.Column('effect_ci_high', sa.Float(), nullable=False),
    sa.Column('n_baseline', sa.Integer(), nullable=False),
    sa.Column('baseline_failures', sa.Integer(), nullable=False),
    sa.Column('n_observed', sa.Integer(), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('statistic', sa.Float(), nullable=False),
    sa.Column('threshold', sa.Float(), nullable=False),
    sa.Column('p_value', sa.Float(), nullable=False),
    sa.Column('mde', sa.Float(), nullable=True),
    sa.Column('change_point_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('deploy_ids', postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False),
    sa.Column('sample_output', sa.Text(), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('details', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('self', 'peer')", name=op.f('ck_findings_kind')),
    sa.ForeignKeyConstraint(['target_id'], ['targets.id'], name=op.f('fk_findings_target_id_targets')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_findings'))
    )
    op.create_index('ix_findings_target_metric_created', 'findings', ['target_id', 'metric', sa.literal_column('created_at DESC')], unique=False)
    op.create_table('alerts',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('fingerprint', sa.Text(), nullable=False),
    sa.Column('target_id', sa.Integer(), nullable=False),
    sa.Column('metric', sa.Text(), nullable=False),
    sa.Column('state', sa.Text(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('fired_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_active_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_evaluated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finding_id', sa.BigInteger(), nullable=True),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('labels', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.CheckConstraint("state IN ('pending', 'firing', 'resolved')", name=op.f('ck_alerts_state')),
    sa.ForeignKeyConstraint(['finding_id'], ['findings.id'], name=op.f('fk_alerts_finding_id_findings'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['target_id'], ['targets.id'], name=op.f('fk_alerts_target_id_targets')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alerts'))
    )
    op.create_index('ix_alerts_state', 'alerts', ['state'], unique=False)
    op.create_index('uq_alerts_open_fingerprint', 'alerts', ['fingerprint'], unique=True, postgresql_where=sa.text("state IN ('pending', 'firing')"))
    op.create_table('alert_deliveries',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('alert_id', sa.BigInteger(), nullable=False),
    sa.Column('receiver', sa.Text(), nullable=False),
    sa.Column('event', sa.Text(), nullable=False),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('status', sa.Text(), server_default='pending', nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("event IN ('firing', 'resolved')", name=op.f('ck_alert_deliveries_event')),
    sa.CheckConstraint("status IN ('pending', 'delivered', 'failed', 'gave_up')", name=op.f('ck_alert_deliveries_status')),
    sa.ForeignKeyConstraint(['alert_id'], ['alerts.id'], name=op.f('fk_alert_deliveries_alert_id_alerts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alert_deliveries'))
    )
    op.create_index('ix_alert_deliveries_alert', 'alert_deliveries', ['alert_id'], unique=False)
    op.create_index('ix_alert_deliveries_status_next', 'alert_deliveries', ['status', 'next_attempt_at'], unique=False)
    op.create_table('delivery_attempts',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('delivery_id', sa.BigInteger(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ok', sa.Boolean(), nullable=False),
    sa.Column('http_status', sa.SmallInteger(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('duration_ms', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['delivery_id'], ['alert_deliveries.id'], name=op.f('fk_delivery_attempts_delivery_id_alert_deliveries'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_delivery_attempts'))
    )
    op.create_index('ix_delivery_attempts_delivery', 'delivery_attempts', ['delivery_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_delivery_attempts_delivery', table_name='delivery_attempts')
    op.drop_table('delivery_attempts')
    op.drop_index('ix_alert_deliveries_status_next', table_name='alert_deliveries')
    op.drop_index('ix_alert_deliveries_alert', table_name='alert_deliveries')
    op.drop_table('alert_deliveries')
    op.drop_index('uq_alerts_open_fingerprint', table_name='alerts', postgresql_where=sa.text("state IN ('pending', 'firing')"))
    op.drop_index('ix_alerts_state', table_name='alerts')
    op.drop_table('alerts')
    op.drop_index('ix_findings_target_metric_created', table_name='findings')
    op.drop_table('findings')
    op.drop_index('ix_deploys_started_at', table_name='deploys')
    op.drop_table('deploys')
