"""Property-based suites (hypothesis); the profiles live in this folder's conftest."""
