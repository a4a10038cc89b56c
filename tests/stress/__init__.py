"""Stress suite: concurrent writers and processors, seeded kills, exact rollups."""
