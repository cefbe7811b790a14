"""Root pytest configuration, loaded before any test or doctest module.

Forces the CPU backend with 4 simulated devices; this must run before jax is
imported anywhere, which is why it lives at the repository root.

The whole session (both xdist workers) shares one fresh persistent
compilation cache in a temporary directory: a program that several tests
compile identically (the same epoch of the same model) is compiled once. It
is also where drivers run in-process put their compiled programs
(``$JAXUNLEARN_CACHE/xla``), so no test writes to the working tree's
``.cache``. Every session starts empty, so CI and local runs cost the same.
"""

import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# 4 simulated devices; LLVM optimisation level 1 for every program, as the
# engine already compiles its epochs on CPU (train._engine.CPU_COMPILER_OPTIONS:
# about half the compile time, run no slower). Compilation is most of the
# suite's time; the tests' programs are tiny.
for _flag in (
    "--xla_force_host_platform_device_count=4",
    "--xla_backend_optimization_level=1",
):
    if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " " + _flag
        ).strip()
os.environ.setdefault("MPLBACKEND", "Agg")

_OWNER = "JAXUNLEARN_TEST_CACHE" not in os.environ  # the xdist controller
if _OWNER:  # workers inherit the controller's environment
    os.environ["JAXUNLEARN_TEST_CACHE"] = tempfile.mkdtemp(prefix="jaxunlearn-test-")
_ROOT = os.environ["JAXUNLEARN_TEST_CACHE"]
os.environ["JAXUNLEARN_CACHE"] = _ROOT
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(_ROOT, "xla")
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"


def pytest_unconfigure(config):
    if _OWNER and not hasattr(config, "workerinput"):
        shutil.rmtree(_ROOT, ignore_errors=True)
