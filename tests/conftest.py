"""Tests run with float64 enabled so exactness checks are meaningful; float32 behaviour is tested
with explicit float32 inputs."""

import os

if "PYTEST_XDIST_WORKER" in os.environ:
    # Two workers share two cores: one XLA thread each instead of two pools fighting for both.
    os.environ["XLA_FLAGS"] = " ".join(
        [os.environ.get("XLA_FLAGS", ""), "--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1"]
    ).strip()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)


def _memory_maps() -> int:
    try:
        with open("/proc/self/maps") as f:
            return sum(1 for _ in f)
    except OSError:
        return -1


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
    """Drop every compiled executable after each test module.

    XLA CPU maps a few memory regions per executable and never unmaps them while it is cached; the
    whole suite in one process compiles enough to reach Linux's default limit of 65,530 maps
    (``vm.max_map_count``), where the next compilation aborts the process. Modules compile once and
    share nothing compiled, so clearing between them costs nothing.
    """
    yield
    before = _memory_maps()
    jax.clear_caches()
    log = os.environ.get("JAXRECON_TEST_MAPS_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{before} {_memory_maps()}\n")


@pytest.fixture
def astra():
    """ASTRA Toolbox (the `astra` extra), the reference for the CPU projectors; skips if absent.

    Tests that take this fixture carry the `astra` marker: `pytest -m astra` runs them alone."""
    return pytest.importorskip("astra", reason="the ASTRA comparisons need the `astra` extra: pip install -e '.[astra]'")


def pytest_collection_modifyitems(items):
    for item in items:
        if "astra" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.astra)
