"""Hypothesis profiles for the property suites.

``ci`` (the default) runs 1,000 examples per test, derandomized and without the
example database, so every run, local or CI, tries exactly the same inputs and a
failure reproduces from the test name alone. ``HYPOTHESIS_PROFILE=dev`` runs
100 random examples for a quick local loop.

Tests that do file I/O per example ask for fewer examples with
``properties.strategies.io_examples(n)`` (and say why), which also scales them
down under ``dev``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=1_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
settings.register_profile(
    "dev",
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
