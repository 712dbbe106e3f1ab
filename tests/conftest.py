"""Suite-wide settings: hypothesis is deterministic on CI and never judged by speed."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "matric",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=bool(os.environ.get("CI")),
    database=None,
)
settings.load_profile("matric")
