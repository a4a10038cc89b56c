"""SQLite rollups (``sqlite:///relative.db``, ``sqlite:////abs/path.db``): stdlib ``sqlite3``, WAL.

``SQLiteRollups`` keeps every report's rollups, interval state, processed
markers, leases and the cleanup watermark in three tables of one database file
(see ``rollups.py`` for how the contract is kept, ``_schema.py`` for the
tables). It needs no server and no extra package; every processor on the host
opens the same file.
"""

from event_meter.stores.sqlite._schema import DEFAULT_TABLE_PREFIX
from event_meter.stores.sqlite.rollups import SQLiteRollups

__all__ = ["DEFAULT_TABLE_PREFIX", "SQLiteRollups"]
