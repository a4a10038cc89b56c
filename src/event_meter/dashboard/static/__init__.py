"""The dashboard page's files, read with ``importlib.resources`` (no Python here)."""
