"""Near-duplicates and incremental crawls: MinHash signature + similarity on articles, the
``article_bands`` LSH index, an index on ``articles.url``, and the ``stories`` view.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 09:00:00

Existing rows get no signature (NULL): they are not near-duplicate candidates
until they are re-fetched with a changed text.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STORIES_VIEW = """
CREATE VIEW stories AS
SELECT a.id, a.source, a.url, a.canonical_url, a.title, a.subtitle, a.body, a.authors,
       a.published_at, a.modified_at, a.language, a.section, a.tags, a.image_url, a.site_name,
       a.content_hash, a.version, a.first_seen_at, a.last_seen_at, a.updated_at,
       (SELECT count(*) FROM articles d WHERE d.duplicate_of = a.id) AS copies
FROM articles a
WHERE a.duplicate_of IS NULL
"""


def upgrade() -> None:
    with op.batch_alter_table('articles', schema=None) as batch_op:
        batch_op.add_column(sa.Column('minhash', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('similarity', sa.Float(), nullable=True))
        batch_op.create_index(batch_op.f('ix_articles_url'), ['url'], unique=False)

    op.create_table('article_bands',
    sa.Column('band_no', sa.SmallInteger(), nullable=False),
    sa.Column('band_hash', sa.BigInteger(), nullable=False),
    sa.Column('article_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.ForeignKeyConstraint(['article_id'], ['articles.id'], name=op.f('fk_article_bands_article_id_articles'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('band_no', 'band_hash', 'article_id', name=op.f('pk_article_bands'))
    )
    with op.batch_alter_table('article_bands', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_article_bands_article_id'), ['article_id'], unique=False)
    op.execute(STORIES_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS stories")
    with op.batch_alter_table('article_bands', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_article_bands_article_id'))
    op.drop_table('article_bands')
    with op.batch_alter_table('articles', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_articles_url'))
        batch_op.drop_column('similarity')
        batch_op.drop_column('minhash')
