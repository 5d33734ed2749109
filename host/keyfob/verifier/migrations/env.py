"""Alembic environment for the verifier. Run only through :func:`keyfob.verifier.db.upgrade`, which
passes an open connection in ``config.attributes['connection']`` (no alembic.ini, no URL here)."""

from alembic import context

from keyfob.verifier.models import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reachable from the alembic command line
    raise RuntimeError("run keyfob migrations through keyfob.verifier.db.upgrade()")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
