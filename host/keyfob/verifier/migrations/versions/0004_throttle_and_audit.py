"""Issue 11's holes: the back-off throttle, drift bounds, aggregated audit rows.

* ``throttle``: one row per throttled key (a user name's tag or a source address), with its failure
  count, last failure, the time of the next checked attempt, and the audit row that aggregates the
  attempts refused meanwhile (see ``keyfob.verifier.throttle``). It replaces the fixed per-user
  window of ``users.rl_start`` / ``users.rl_count``, which stay, unused: dropping them on SQLite
  means copying ``users``, which the foreign keys of ``tokens`` and ``backup_codes`` refuse inside
  the migration's transaction.
* ``tokens.sync_drift``: the TOTP drift set by the token's last link or resync; logins may move the
  drift only a bounded distance from it (``totp_drift_max``).
* ``audit.count``: how many attempts one row stands for (aggregated throttled attempts; else 1);
  ``audit.source``: the source address the front gave for an attempt, if any.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "throttle",
        sa.Column("key", sa.String(80), nullable=False),
        sa.Column("fails", sa.Integer, nullable=False),
        sa.Column("last_fail", sa.Float, nullable=False),
        sa.Column("next_ok", sa.Float, nullable=False),
        sa.Column("agg_id", sa.Integer, nullable=True),
        sa.Column("agg_until", sa.Float, nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_throttle"),
    )
    op.create_index("ix_throttle_last_fail", "throttle", ["last_fail"])  # pruning forgotten keys
    # plain ADD COLUMN (with a constant default) on every engine, SQLite included
    op.add_column("tokens", sa.Column("sync_drift", sa.Integer, nullable=False, server_default="0"))
    op.add_column("audit", sa.Column("count", sa.Integer, nullable=False, server_default="1"))
    op.add_column("audit", sa.Column("source", sa.String(64), nullable=True))
    op.create_index("ix_audit_ts", "audit", ["ts"])  # retention deletes by age


def downgrade() -> None:
    op.drop_index("ix_audit_ts", "audit")
    with op.batch_alter_table("audit") as batch:
        batch.drop_column("source")
        batch.drop_column("count")
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("sync_drift")
    op.drop_table("throttle")
