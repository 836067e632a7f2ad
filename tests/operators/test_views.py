"""select_views: the operator of a subset of the views equals the rows of the full sinogram."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrecon.operators import (
    FanBeamGeometry,
    FanBeamVecGeometry,
    MatrixOperator,
    ParallelBeamGeometry,
    RadonTransform,
    XRayTransform,
    dot_test,
    select_views,
)

GEOM = ParallelBeamGeometry.uniform((16, 16), 10)
X = jax.random.normal(jax.random.key(0), (16, 16))


@pytest.mark.parametrize("views", [np.arange(0, 10, 2), np.array([3, 3, 0, 9]), jnp.array([7])])
def test_rows_of_the_full_sinogram(views):
    op = RadonTransform(GEOM)
    sub = select_views(op, views)
    assert isinstance(sub, RadonTransform) and sub.out_shape == (len(views), GEOM.num_detectors)
    np.testing.assert_allclose(sub(X), op(X)[np.asarray(views)], rtol=1e-12, atol=1e-12)
    assert abs(float(dot_test(sub))) < 1e-10


def test_fan_beam_and_traced_indices():
    op = XRayTransform(FanBeamGeometry.uniform((16, 16), 12, 40.0, 30.0))
    views = jnp.array([1, 5, 11])
    np.testing.assert_allclose(select_views(op, views)(X), op(X)[views], rtol=1e-12, atol=1e-12)
    parallel = RadonTransform(GEOM)  # traced indices (parallel beam): no range check, the same result
    traced = jax.jit(lambda v: select_views(parallel, v)(X))(views)
    np.testing.assert_allclose(traced, parallel(X)[views], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "op, views, error, message",
    [
        (MatrixOperator(jnp.eye(3)), [0], TypeError, "RadonTransform"),
        (RadonTransform(GEOM), np.array([0, 10]), ValueError, "indices in [0, 10)"),
        (RadonTransform(GEOM), np.array([-1]), ValueError, "indices in [0, 10)"),
        (RadonTransform(GEOM), np.zeros((2, 2), int), ValueError, "non-empty 1-D integer"),
        (RadonTransform(GEOM), np.array([0.5]), ValueError, "non-empty 1-D integer"),
        (RadonTransform(GEOM), "0", TypeError, "1-D integer array"),
    ],
)
def test_errors(op, views, error, message):
    with pytest.raises(error, match=message.replace("[", r"\[").replace(")", r"\)")):
        select_views(op, views)


def test_vec_geometry_is_refused():
    vec = FanBeamGeometry.uniform((16, 16), 8, 40.0, 30.0).to_vec()
    assert isinstance(vec, FanBeamVecGeometry)
    with pytest.raises(TypeError, match="FanBeamVecGeometry"):
        select_views(XRayTransform(vec), [0])
