"""API keys for ``keyfob serve`` (issue 12), and the audit column naming the key a login came through.

* ``api_keys``: one row per key a relying party or an admin tool presents to the HTTP API: its name
  (unique, shown in the audit log), scope (``validate`` or ``admin``), whether its validate calls
  check the code alone (``code_only``: the relying party checked the password itself), the SHA-256
  of the key (the key is 256 random bits, shown once; never stored), when it was made and revoked.
* ``audit.via``: the front and credential a login came through (e.g. ``api:web-login``), if any.
  Admin calls need no new column: their ``actor`` names the key.


Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("code_only", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("key_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("name", name="uq_api_keys_name"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.add_column("audit", sa.Column("via", sa.String(40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit") as batch:
        batch.drop_column("via")
    op.drop_table("api_keys")
