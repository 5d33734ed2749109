"""Index the audit log by user and serial (``keyfob audit --user/--serial`` on a long log).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_audit_user_name", "audit", ["user_name"])
    op.create_index("ix_audit_serial", "audit", ["serial"])


def downgrade() -> None:
    op.drop_index("ix_audit_serial", "audit")
    op.drop_index("ix_audit_user_name", "audit")
