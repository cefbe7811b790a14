"""Root pytest configuration, loaded before any test or doctest module.

Forces the CPU backend with 4 simulated devices; this must run before jax is
imported anywhere, which is why it lives at the repository root.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flag = "--xla_force_host_platform_device_count=4"
if _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
os.environ.setdefault("MPLBACKEND", "Agg")
