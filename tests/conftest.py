"""Suite-wide settings: hypothesis is deterministic on CI and never judged by speed; Ray
stays on loopback."""

import os

from hypothesis import HealthCheck, settings

# Ray reads these once, when it is first imported (ray._private.ray_constants): a local
# cluster on 127.0.0.1 (not the machine's interface address) and no usage stats sent. Set
# here, before any test module is collected, since any of them may import Ray first.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

settings.register_profile(
    "matric",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=bool(os.environ.get("CI")),
    database=None,
)
settings.load_profile("matric")
