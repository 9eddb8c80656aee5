"""Scale-out: the Scrapyd node, job id and heartbeat of a crawl run.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 09:00:00

All three columns are nullable: runs of local subprocesses (and every run from
before this revision) have no node and no job id.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('crawl_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('node', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('job_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_crawl_runs_job_id'), ['job_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('crawl_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_crawl_runs_job_id'))
        batch_op.drop_column('heartbeat_at')
        batch_op.drop_column('job_id')
        batch_op.drop_column('node')
