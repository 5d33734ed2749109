"""The security center in a browser (issue 13).

* ``users.admin``: may use the help-desk pages of ``keyfob serve`` (``keyfob user help-desk NAME``).
* ``users.web_generation``: bumped by a sign-out; a session cookie made under an older generation
  is refused, so signing out ends every session of the user at once, on every node.
* ``backup_codes.expires_at``: a help desk's one-day temporary code is a backup code that stops
  working at this time (NULL: a backup code that never expires).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("admin", sa.Boolean, nullable=False, server_default=sa.false()))
    op.add_column("users", sa.Column("web_generation", sa.Integer, nullable=False, server_default="0"))
    op.add_column("backup_codes", sa.Column("expires_at", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("backup_codes") as batch:
        batch.drop_column("expires_at")
    # a plain DROP COLUMN (SQLite 3.35 or later): batch mode would copy ``users``, which the foreign
    # keys of ``tokens`` and ``backup_codes`` refuse inside the migration's transaction (see 0004)
    op.drop_column("users", "web_generation")
    op.drop_column("users", "admin")
