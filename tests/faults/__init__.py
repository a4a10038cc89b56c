"""Fault injection against the real file system and a real PostgreSQL server (issue 5)."""
