"""Source leases: one row per source being crawled by a scheduler, with an expiry.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 03:00:00

The scheduler's own job table (`apscheduler_jobs`) is not part of this schema:
APScheduler creates and owns it.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('source_leases',
    sa.Column('source', sa.String(length=100), nullable=False),
    sa.Column('owner', sa.String(length=255), nullable=False),
    sa.Column('acquired_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('source', name=op.f('pk_source_leases'))
    )
    with op.batch_alter_table('source_leases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_source_leases_expires_at'), ['expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('source_leases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_source_leases_expires_at'))
    op.drop_table('source_leases')
