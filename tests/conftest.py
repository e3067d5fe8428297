"""Shared test configuration: hypothesis profiles.

``HYPOTHESIS_PROFILE=ci`` gives a derandomized, reproducible run (used by ``.ci/run``); the default
``dev`` profile draws fresh random examples on every run.
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, max_examples=10, deadline=None, print_blob=True)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
