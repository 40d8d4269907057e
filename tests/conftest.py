"""Suite-wide test settings."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

# CI machines are small and shared: time limits per example would make property tests
# flaky without making them stronger. Example counts stay set per test.
settings.register_profile(
    "aminspect",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)
settings.load_profile("aminspect")
