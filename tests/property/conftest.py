"""One fixed Hypothesis profile: the same examples on every run, in CI and here."""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "fixed",
    max_examples=300,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("fixed")
