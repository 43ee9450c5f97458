"""Fixtures shared by the tests in this folder (the root conftest.py has the session plumbing)."""

from pg import postgres  # noqa: F401 (the session's PostgreSQL server; see tests/pg.py)
