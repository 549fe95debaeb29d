"""Alembic revisions for the shop's schema (run with `cardshop migrate`)."""
