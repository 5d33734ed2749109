"""Keep each token's manufacturer and model (RFC 6030 DeviceInfo), so an export writes them back.

Both are nullable: tokens imported before this revision (and tokens whose file named neither)
have NULL, and export then falls back to what it wrote before (keyfob serials: ``keyfob`` /
``keyfob-1``, others ``unknown``). Plain ``ADD COLUMN`` on SQLite and PostgreSQL alike.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tokens", sa.Column("manufacturer", sa.String(64), nullable=True))
    op.add_column("tokens", sa.Column("model", sa.String(64), nullable=True))


def downgrade() -> None:
    # batch mode: SQLite before 3.35 cannot DROP COLUMN in place
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("model")
        batch.drop_column("manufacturer")
