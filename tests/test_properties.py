"""Property-based tests over the public API: a clear error raised by jaxrecon, or a correct result.

Never an internal error from another library, never a silent non-finite result: random shapes, dtypes,
option values and NaN/inf positions (hypothesis). Each property compiles once (fixed shapes inside a
`jit`, data drawn per example) so that the module stays fast.
"""

import math
import traceback

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxrecon.metrics import psnr, ssim
from jaxrecon.operators import MatrixOperator, ParallelBeamGeometry, RadonTransform, radon
from jaxrecon.solvers import cgls, fista, landweber, tv_pdhg
from jaxrecon.train.experiment import experiment_config

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _raised_by_jaxrecon(error: BaseException) -> bool:
    """The innermost frame that raised is in jaxrecon's own code (a message we wrote), not a library's."""
    frames = traceback.extract_tb(error.__traceback__)
    return any("/jaxrecon/" in f.filename and "/tests/" not in f.filename for f in frames[-2:])


def _clear_error_or(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError) as e:
        assert _raised_by_jaxrecon(e), f"not our error: {type(e).__name__}: {e}"
        assert str(e), "an error without a message"
        return None


junk = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 40), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4), st.lists(st.floats(-10, 10), max_size=3), st.tuples(st.integers(-2, 20), st.integers(-2, 20)),
)
angles = st.one_of(junk, st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=0, max_size=6))


@SETTINGS
@given(shape=junk, angles=angles, num_detectors=junk, spacing=junk)
def test_parallel_geometry_constructor(shape, angles, num_detectors, spacing):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # angles that look like degrees: legal
        geom = _clear_error_or(ParallelBeamGeometry, shape, angles, num_detectors, spacing)
    if geom is not None:
        assert geom.angles.ndim == 1 and geom.angles.shape[0] > 0
        assert bool(jnp.all(jnp.isfinite(geom.angles))) and geom.num_detectors > 0


GEOM = ParallelBeamGeometry.uniform((8, 8), 6, 13)


@SETTINGS
@given(shape=st.tuples(st.integers(1, 10), st.integers(1, 10)), dtype=st.sampled_from(["float32", "int32", "bool", "complex64"]))
def test_radon_shapes_and_dtypes(shape, dtype):
    x = jnp.ones(shape, dtype)
    y = _clear_error_or(radon, x, GEOM)
    if y is not None:
        assert shape == (8, 8) and y.shape == (6, 13) and bool(jnp.all(jnp.isfinite(y)))


A = np.random.default_rng(0).standard_normal((12, 8)) / 3
OP = MatrixOperator(jnp.asarray(A))
RADON = RadonTransform(GEOM)
SOLVES = {
    "cgls": jax.jit(lambda y: cgls(OP, y, max_iter=15)),
    "landweber": jax.jit(lambda y: landweber(OP, y, max_iter=15)),
    "fista": jax.jit(lambda y: fista(OP, y, 0.05, max_iter=15)),
    "tv_pdhg": jax.jit(lambda y: tv_pdhg(RADON, jnp.resize(y, (6, 13)), 0.05, max_iter=15)),  # y repeated
}


@SETTINGS
@given(
    values=st.lists(st.floats(-1e3, 1e3, width=64), min_size=12, max_size=12),
    bad=st.lists(st.tuples(st.integers(0, 11), st.sampled_from([math.nan, math.inf, -math.inf])), max_size=3),
    name=st.sampled_from(sorted(SOLVES)),
)
def test_solvers_flag_non_finite_data_and_stay_finite_otherwise(values, bad, name):
    y = np.asarray(values)
    for i, v in bad:
        y[i] = v
    s = SOLVES[name](jnp.asarray(y))
    if bad:
        assert s.status == "nonfinite", (name, s.status)
    else:
        assert s.status == "fixed_iterations" and bool(jnp.all(jnp.isfinite(s.x))), (name, s.status)


@SETTINGS
@given(
    shapes=st.tuples(st.sampled_from([(12, 12), (12, 13), (11, 12)]), st.sampled_from([(12, 12), (12, 13)])),
    scale=st.floats(0.0, 1e3), offset=st.floats(-1e3, 1e3), data_range=st.one_of(st.none(), st.floats(-2, 300)),
)
def test_metrics_clear_error_or_not_nan(shapes, scale, offset, data_range):
    rng = np.random.default_rng(1)
    x = jnp.asarray(offset + scale * rng.random(shapes[0]))
    ref = jnp.asarray(offset + scale * rng.random(shapes[1]))
    for metric in (psnr, ssim):
        value = _clear_error_or(metric, x, ref, data_range)
        if value is not None:
            assert shapes[0] == shapes[1] and not bool(jnp.isnan(value)), (metric.__name__, value)


@SETTINGS
@given(seed=junk, steps=junk, size=junk)
def test_experiment_config_counts(seed, steps, size):
    config = _clear_error_or(experiment_config, "lpd", "quick", seed=seed, train={"steps": steps}, data={"size": size})
    if config is not None:
        assert config["seed"] >= 0 and config["train"]["steps"] >= 1 and config["data"]["size"] >= 1
