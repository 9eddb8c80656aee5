"""Incremental recrawls of copies: ``article_urls``, every URL an article's page was fetched under.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 09:00:00

One row per fetched URL (canonicalized): the article row it was stored under or
linked to, and that URL's own ETag / Last-Modified. A syndicated, AMP or print
copy that declares another URL canonical is stored under the canonical page's
row; without its own row here, every recrawl fetched and extracted it again.

Nothing is backfilled: for rows stored before this revision the recrawl check
falls back to ``articles.canonical_url`` / ``articles.url`` as before, and each
URL gets its row the next time its page is fetched.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('article_urls',
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('article_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('http_etag', sa.Text(), nullable=True),
    sa.Column('http_last_modified', sa.Text(), nullable=True),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['article_id'], ['articles.id'], name=op.f('fk_article_urls_article_id_articles'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('url', name=op.f('pk_article_urls'))
    )
    with op.batch_alter_table('article_urls', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_article_urls_article_id'), ['article_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('article_urls', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_article_urls_article_id'))
    op.drop_table('article_urls')
