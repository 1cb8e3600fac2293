"""One fixed Hypothesis profile: the same examples on every run, in CI and here; a smaller one
for mutation runs (scripts/mutation.py), where each surviving mutant runs these tests again."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "fixed",
    max_examples=300,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("mutation", settings.get_profile("fixed"), max_examples=50)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fixed"))
