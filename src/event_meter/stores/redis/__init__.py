"""Redis backends: ``RedisStream`` and ``RedisRollups`` (SPEC 11), driver imported lazily.

- ``stream.py``   the stream store (``XADD`` / ``XRANGE`` / ``XDEL``)
- ``rollups.py``  the rollup store (HASH rollups, STRING state, markers, definition)
- ``lock.py``     the lease lock with its refresher thread, used by both
- ``lua/*.lua``   the scripts, loaded once per client and called by SHA

Importing this package does not import redis-py; using a store without it
raises ``ConfigurationError`` with ``pip install "event-meter[redis]"``.
"""
