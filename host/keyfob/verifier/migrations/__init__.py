"""Alembic migrations of the verifier database, run from :mod:`keyfob.verifier.db`."""
