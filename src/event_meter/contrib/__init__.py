"""Integrations with application frameworks.

``event_meter.contrib.django`` is a Django app (settings, migrations,
management commands, system checks); ``event_meter.contrib.sqlalchemy``
describes the PostgreSQL tables as SQLAlchemy ``MetaData`` for Alembic. Each
imports its framework only when it is imported itself.
"""
