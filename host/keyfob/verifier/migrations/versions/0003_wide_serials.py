"""Widen the serial columns (``tokens.serial``, ``audit.serial``) from 16 to 64 characters, for
other vendors' serials (keyfob serials have 11; see ``keyfob.serials.SERIAL_MAX``).

SQLite cannot alter a column's type, so this goes through ``batch_alter_table``: on SQLite the
table is copied into a new one of the new shape (keeping its constraints and indexes); on other
engines it is a plain ``ALTER COLUMN``.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_COLUMNS = (("tokens", False), ("audit", True))  # (table, serial nullable)


def upgrade() -> None:
    for table, nullable in _COLUMNS:
        with op.batch_alter_table(table) as batch:
            batch.alter_column("serial", existing_type=sa.String(16), type_=sa.String(64), existing_nullable=nullable)


def downgrade() -> None:
    conn = op.get_bind()
    for table, _ in _COLUMNS:
        longest = conn.execute(sa.text(f"SELECT max(length(serial)) FROM {table}")).scalar()
        if longest is not None and longest > 16:
            raise RuntimeError(f"cannot go below revision 0003: table {table} holds serials longer than 16 characters")
    for table, nullable in _COLUMNS:
        with op.batch_alter_table(table) as batch:
            batch.alter_column("serial", existing_type=sa.String(64), type_=sa.String(16), existing_nullable=nullable)
