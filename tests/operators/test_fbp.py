"""FBP against ASTRA's FBP, scikit-image's filters and the phantom."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.data import shepp_logan_phantom
from skimage.transform import resize
from skimage.transform.radon_transform import _get_fourier_filter

from jaxrecon.operators import ParallelBeamGeometry, fbp, radon
from jaxrecon.operators.fbp import FBP_FILTERS, fbp_filter


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


@pytest.mark.parametrize("name", FBP_FILTERS)
def test_filters_match_scikit_image(name):
    skname = {"ram-lak": "ramp"}.get(name, name)
    n = 256
    ref = _get_fourier_filter(n, skname)[:, 0] / 2  # scikit-image folds a factor 2 of pi/(2A) into it
    np.testing.assert_allclose(fbp_filter(100, name), ref[: n // 2 + 1], atol=1e-12)


@pytest.mark.parametrize("n, num_angles", [(64, 64), (128, 30), (128, 180)])
def test_matches_astra_fbp(n, num_angles, astra):
    x = resize(shepp_logan_phantom(), (n, n), anti_aliasing=True).astype(np.float32)
    geom = ParallelBeamGeometry.uniform((n, n), num_angles, int(np.ceil(np.sqrt(2) * n)))
    sino = radon(jnp.asarray(x), geom)
    vg = astra.create_vol_geom(n, n)
    pg = astra.create_proj_geom("parallel", 1.0, geom.num_detectors, np.asarray(geom.angles, np.float64))
    pid = astra.create_projector("linear", pg, vg)
    sid = astra.data2d.create("-sino", pg, np.asarray(sino))
    rid = astra.data2d.create("-vol", vg)
    cfg = astra.astra_dict("FBP")
    cfg.update(ReconstructionDataId=rid, ProjectionDataId=sid, ProjectorId=pid, option={"FilterType": "ram-lak"})
    alg = astra.algorithm.create(cfg)
    astra.algorithm.run(alg)
    ref = astra.data2d.get(rid)
    for i in (alg,):
        astra.algorithm.delete(i)
    astra.data2d.delete([sid, rid])
    assert rel(fbp(sino, geom), ref) < 1e-3


def test_reconstructs_the_phantom():
    n = 128
    x = resize(shepp_logan_phantom(), (n, n), anti_aliasing=True)
    geom = ParallelBeamGeometry.uniform((n, n), 180, 183, dtype=jnp.float64)
    rec = fbp(radon(jnp.asarray(x), geom), geom, "ram-lak")
    assert rel(rec, x) < 0.15
    assert abs(float(rec.mean()) / x.mean() - 1) < 1e-3  # the ramp's DC term is right
    assert rel(fbp(radon(jnp.asarray(x), geom), geom, "hann"), x) < 0.3


@pytest.mark.slow
def test_detector_spacing_is_accounted_for():
    n = 64
    x = resize(shepp_logan_phantom(), (n, n), anti_aliasing=True)
    fine = ParallelBeamGeometry.uniform((n, n), 90, 181, detector_spacing=0.5, dtype=jnp.float64)
    coarse = ParallelBeamGeometry.uniform((n, n), 90, 91, dtype=jnp.float64)
    a, b = fbp(radon(jnp.asarray(x), fine), fine), fbp(radon(jnp.asarray(x), coarse), coarse)
    assert abs(float(a.mean()) / float(b.mean()) - 1) < 2e-3
    assert rel(a, x) < 0.2


def test_vmap_and_grad():
    geom = ParallelBeamGeometry.uniform((24, 24), 12, 35)
    ys = jax.random.normal(jax.random.PRNGKey(0), (3, 12, 35))
    np.testing.assert_allclose(jax.vmap(fbp, (0, None))(ys, geom), jnp.stack([fbp(y, geom) for y in ys]), atol=1e-5)
    assert jnp.all(jnp.isfinite(jax.grad(lambda y: jnp.sum(fbp(y, geom) ** 2))(ys[0])))


def test_bad_input():
    geom = ParallelBeamGeometry.uniform((16, 16), 5)
    with pytest.raises(ValueError, match="filter must be one of"):
        fbp(jnp.ones((5, 23)), geom, "ramp-lak")
    with pytest.raises(ValueError, match=r"expects a sinogram of shape \(5, 23\), got \(5, 22\)"):
        fbp(jnp.ones((5, 22)), geom)
