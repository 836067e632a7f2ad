"""Evaluation: per-sample PSNR/SSIM against scikit-image, chunked reconstruction, timing, validation."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from jaxrecon.operators.geometry import ParallelBeamGeometry
from jaxrecon.operators.radon import RadonTransform
from jaxrecon.train.data import Sample
from jaxrecon.train.evaluate import evaluate, reconstruct

OP = RadonTransform(ParallelBeamGeometry.uniform((16, 16), 8))


class Tiny(eqx.Module):
    w: jax.Array

    def __call__(self, y, op):
        return self.w * op.T(y)


@pytest.fixture(scope="module")
def samples():
    rng = np.random.default_rng(0)
    t = np.linspace(-1, 1, 16)
    xs = []
    for _ in range(3):  # smooth blobs of different ranges
        c = rng.uniform(-0.5, 0.5, 2)
        xs.append(rng.uniform(0.5, 2.0) * np.exp(-((t[:, None] - c[0]) ** 2 + (t[None, :] - c[1]) ** 2) / 0.2))
    xs = jnp.asarray(np.stack(xs))
    return Sample(jax.vmap(OP)(xs), xs)


def test_metrics_against_skimage(samples):
    model = Tiny(jnp.asarray(0.05))
    out = evaluate(model, OP, samples)
    assert set(out) == {"psnr_mean", "psnr_std", "ssim_mean", "ssim_std", "seconds_per_reconstruction"}
    assert all(isinstance(v, float) for v in out.values())
    p, s = [], []
    for y, x in zip(samples.y, samples.x):
        rec, ref = np.asarray(model(y, OP)), np.asarray(x)
        rng = ref.max() - ref.min()
        p.append(peak_signal_noise_ratio(ref, rec, data_range=rng))
        s.append(structural_similarity(ref, rec, data_range=rng, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False))
    assert np.std(p) > 0.1  # the samples differ, so the std is tested too
    np.testing.assert_allclose([out["psnr_mean"], out["psnr_std"]], [np.mean(p), np.std(p)], rtol=1e-9)
    np.testing.assert_allclose([out["ssim_mean"], out["ssim_std"]], [np.mean(s), np.std(s)], rtol=1e-6, atol=1e-9)
    assert 0 < out["seconds_per_reconstruction"] < 1.0


def test_chunked_reconstruction_equals_vmap(samples):
    model = Tiny(jnp.asarray(0.05))
    full = reconstruct(model, OP, samples.y)
    chunked = reconstruct(model, OP, samples.y, batch_size=2)  # 3 samples: one full chunk and a remainder
    loop = np.stack([np.asarray(model(y, OP)) for y in samples.y])
    np.testing.assert_allclose(full, loop, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(chunked, loop, rtol=1e-12, atol=1e-14)
    a = evaluate(model, OP, samples, batch_size=2, timed=False)
    b = evaluate(model, OP, samples, timed=False)
    assert "seconds_per_reconstruction" not in a
    assert a == pytest.approx(b, rel=1e-12)


def test_validation(samples):
    model = Tiny(jnp.asarray(0.05))
    with pytest.raises(TypeError, match="Sample"):
        evaluate(model, OP, (samples.y, samples.x))
    with pytest.raises(TypeError, match="LinearOperator, got function"):
        evaluate(model, lambda x: x, samples)
    with pytest.raises(ValueError, match=r"samples.x of shape \(N, H, W\) = \(N, \*\(16, 16\)\).*got x \(2, 16, 16\)"):
        evaluate(model, OP, Sample(samples.y, samples.x[:2]))
    with pytest.raises(ValueError, match=r"measurements of shape \(N, \*\(8, 23\)\), got \(3, 8, 22\)"):
        evaluate(model, OP, Sample(samples.y[:, :, :22], samples.x))
    with pytest.raises(ValueError, match="batch_size must be a positive int or None, got 0"):
        evaluate(model, OP, samples, batch_size=0)
    with pytest.raises(ValueError, match=r"model\(y, op\) of shape \(16, 16\), got \(15, 16\)"):
        evaluate(lambda y, op: op.T(y)[1:], OP, samples, timed=False)
