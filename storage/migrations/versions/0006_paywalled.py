"""``articles.paywalled``: the page said its text is behind a paywall.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 15:10:00

Pages that declare schema.org ``isAccessibleForFree: false`` (or ``article:content_tier``
"locked") show a teaser: ``body`` is that teaser, and this column says so, so that
consumers can tell a partial text from a whole one. NULL for pages that do not say
(and for every row stored before this revision).
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('articles', schema=None) as batch_op:
        batch_op.add_column(sa.Column('paywalled', sa.Boolean(), nullable=True))


def downgrade() -> None:
    # In place (SQLite 3.35+ has DROP COLUMN): batch mode's copy-and-rename of `articles` would
    # fail on SQLite, whose `stories` view (0003) refers to the table by name.
    with op.batch_alter_table('articles', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('paywalled')
