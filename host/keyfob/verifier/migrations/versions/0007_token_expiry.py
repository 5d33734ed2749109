"""Keep each token's expiry (RFC 6030 ExpiryDate, of its Policy or DeviceInfo), so that a token
imported while still valid is refused once the date has passed, and an export writes it back.

``tokens.expires_at``: Unix seconds, inclusive; NULL (every token before this revision, and tokens
whose file gave no date) means no expiry. Plain ``ADD COLUMN`` on SQLite and PostgreSQL alike.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tokens", sa.Column("expires_at", sa.Float(), nullable=True))


def downgrade() -> None:
    # batch mode: SQLite before 3.35 cannot DROP COLUMN in place
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("expires_at")
