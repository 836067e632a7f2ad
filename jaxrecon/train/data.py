r"""Training data generated on the fly: random-ellipse CT samples, deterministic keys, leak-free splits.

A sample is a pair $(y, x)$: the ground truth $x$ is a random ellipse phantom averaged over each
pixel (`rasterize` with supersampling) and the measurement is its *exact* sinogram plus noise,

$$y = \mathcal{R}f + \sigma\varepsilon,\qquad \sigma = \text{noise}\cdot\operatorname{mean}|\mathcal{R}f|,
\quad \varepsilon \sim N(0, I),$$

where $\mathcal{R}f$ are the analytic line integrals of the continuous phantom $f$
(`ellipse_sinogram`), not the discrete projector applied to $x$: no inverse crime.

Keys. Every sample is a pure function of a key, and keys are a pure function of
`(seed, split, index)`:

$$\text{key} = \text{fold\_in}(\text{fold\_in}(\text{key}(\text{seed}), \text{SPLIT\_ID}[\text{split}]), \text{index}).$$

Training step $i$ draws its batch from `split_key(seed, "train", i)`; validation and test sample
$j$ come from `split_key(seed, "validation", j)` / `split_key(seed, "test", j)`. The three splits
are separate streams, so they never share a sample, and a run restarted at step $i$ sees exactly
the batches it would have seen.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from jaxrecon.operators.fan_geometry import FanBeamGeometry, FanBeamVecGeometry
from jaxrecon.operators.geometry import ParallelBeamGeometry
from jaxrecon.operators.noise import gaussian_noise
from jaxrecon.operators.radon import RadonTransform
from jaxrecon.operators.xray import XRayTransform
from jaxrecon.phantoms.ellipses import PRESETS, ellipse_sinogram, random_ellipse_phantom, rasterize
from jaxrecon.phantoms.shepp_logan import shepp_logan, shepp_logan_ellipses

__all__ = ["SPLIT_ID", "Sample", "CTData", "split_key", "batch_keys", "shepp_logan_sample"]

#: Split name -> the integer folded into the seed's key to start that split's stream.
SPLIT_ID = {"train": 0, "validation": 1, "test": 2}


class Sample(NamedTuple):
    """A measurement and its ground truth (a pytree; batched samples carry a leading batch axis).

    Attributes:
        y: the measurement, `op.out_shape` (a sinogram `(num_angles, num_detectors)` for CT).
        x: the ground-truth image, `op.in_shape` (`(H, W)`).
    """

    y: Float[Array, "..."]
    x: Float[Array, "..."]


def _is_int(n) -> bool:
    return isinstance(n, (int, np.integer)) and not isinstance(n, bool)


def _check_key(key, name: str) -> None:
    """A single PRNG key: a typed key of shape () or a raw uint32 key of shape (2,)."""
    if not hasattr(key, "dtype") or not hasattr(key, "shape"):
        raise TypeError(f"{name} expects a JAX PRNG key (jax.random.key(seed)), got {type(key).__name__}")
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        ok = key.shape == ()
    else:
        ok = key.dtype == jnp.uint32 and key.shape == (2,)
    if not ok:
        raise ValueError(
            f"{name} expects a single PRNG key (typed, shape (); or raw uint32, shape (2,)), "
            f"got dtype {key.dtype} and shape {tuple(key.shape)}"
        )


def _check_seed(seed) -> int:
    if not _is_int(seed):
        raise TypeError(f"seed must be a non-negative int, got {seed!r}")
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be a non-negative int below 2**63, got {seed}")
    return int(seed)


def _check_split(split) -> int:
    if not isinstance(split, str) or split not in SPLIT_ID:
        raise ValueError(f"split must be one of {tuple(SPLIT_ID)}, got {split!r}")
    return SPLIT_ID[split]


def split_key(seed: int, split: str, index) -> PRNGKeyArray:
    r"""The key of sample (or training step) `index` of a split: `fold_in(fold_in(key(seed), SPLIT_ID[split]), index)`.

    Args:
        seed: the experiment's seed, a non-negative int.
        split: `"train"`, `"validation"` or `"test"`.
        index: a non-negative int (the training step, or the sample number within the split); an
            integer array is accepted too (traced indices, e.g. under `jax.vmap`).

    Returns:
        A typed PRNG key of shape `()`. Equal arguments give equal keys; different splits give
        independent streams.

    Example:
        >>> k = split_key(0, "train", 5)
        >>> bool(jnp.all(jax.random.key_data(k) == jax.random.key_data(split_key(0, "train", 5))))
        True
        >>> bool(jnp.all(jax.random.key_data(k) == jax.random.key_data(split_key(0, "validation", 5))))
        False
    """
    seed = _check_seed(seed)
    split_id = _check_split(split)
    if _is_int(index):
        if not 0 <= index < 2**32:
            raise ValueError(f"index must be a non-negative int below 2**32, got {index}")
    elif not (hasattr(index, "dtype") and jnp.issubdtype(index.dtype, jnp.integer) and jnp.ndim(index) == 0):
        raise TypeError(f"index must be a non-negative int or an integer scalar array, got {index!r}")
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), split_id), index)


def batch_keys(seed: int, split: str, start: int, count: int) -> PRNGKeyArray:
    """The keys of indices `start, ..., start + count - 1` of a split: `(count,)` typed keys.

    `batch_keys(seed, "validation", 0, n)` are the keys of a validation set of `n` samples; its
    `j`-th entry equals `split_key(seed, "validation", j)`.

    Example:
        >>> batch_keys(0, "test", 0, 4).shape
        (4,)
    """
    for name, value, low in (("start", start, 0), ("count", count, 1)):
        if not _is_int(value):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value}")
    if start + count > 2**32:
        raise ValueError(f"indices must stay below 2**32, got start + count = {start + count}")
    split_key(seed, split, start)  # validate seed and split
    indices = jnp.arange(start, start + count, dtype=jnp.uint32)
    return jax.vmap(lambda i: split_key(seed, split, i))(indices)


def _geometry_dtype(geom):
    """The dtype of a geometry's arrays (`angles`, or `source` for a `FanBeamVecGeometry`)."""
    return (geom.source if isinstance(geom, FanBeamVecGeometry) else geom.angles).dtype


class CTData(eqx.Module):
    r"""Random-ellipse CT samples for a parallel-beam or fan-beam geometry, generated on the fly.

    `sample(key)` draws `random_ellipse_phantom(key1, shape, preset)`, rasterises its pixel averages
    (`supersample` x `supersample` sub-pixel samples per pixel) as the ground truth $x$, and returns
    the exact sinogram of the phantom with relative Gaussian noise of level `noise` as $y$ (see the
    module docstring). The dtype of the data is that of the geometry's arrays (`geometry.angles`).

    Attributes:
        geometry: a `ParallelBeamGeometry`, `FanBeamGeometry` or `FanBeamVecGeometry` (its arrays are
            pytree leaves: traced, not baked into compiled code).
        noise: relative Gaussian noise level $\ge 0$ (static), e.g. 0.05 for 5%.
        preset: random-ellipse preset (static), a key of `jaxrecon.phantoms.ellipses.PRESETS`.
        supersample: sub-pixel samples per axis for the ground truth (static), >= 1.

    Example:
        >>> data = CTData.uniform(16, num_angles=8, noise=0.05)
        >>> s = data.batch(split_key(0, "train", 0), 4)
        >>> s.y.shape, s.x.shape
        ((4, 8, 23), (4, 16, 16))
        >>> data.operator.in_shape
        (16, 16)
    """

    geometry: ParallelBeamGeometry | FanBeamGeometry | FanBeamVecGeometry
    noise: float = eqx.field(static=True)
    preset: str = eqx.field(static=True)
    supersample: int = eqx.field(static=True)

    def __init__(
        self,
        geometry: ParallelBeamGeometry | FanBeamGeometry | FanBeamVecGeometry,
        noise: float,
        preset: str = "adler2018",
        supersample: int = 4,
    ):
        if not isinstance(geometry, (ParallelBeamGeometry, FanBeamGeometry, FanBeamVecGeometry)):
            raise TypeError(
                f"geometry must be a ParallelBeamGeometry, got {type(geometry).__name__} "
                "(or a fan-beam FanBeamGeometry or FanBeamVecGeometry)"
            )
        if isinstance(geometry, FanBeamVecGeometry):
            if geometry.source.ndim != 2:
                raise ValueError(f"geometry.source must have shape (num_angles, 2), got {geometry.source.shape}")
        elif geometry.angles.ndim != 1:
            raise ValueError(f"geometry.angles must have shape (num_angles,), got {geometry.angles.shape}")
        if isinstance(noise, bool) or not isinstance(noise, (int, float, np.integer, np.floating)):
            raise TypeError(f"noise must be a non-negative float (relative level), got {noise!r}")
        if not (np.isfinite(noise) and noise >= 0):
            raise ValueError(f"noise must be a finite non-negative float (relative level), got {noise}")
        if not isinstance(preset, str) or preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
        if not _is_int(supersample):
            raise TypeError(f"supersample must be a positive int, got {supersample!r}")
        if supersample < 1:
            raise ValueError(f"supersample must be a positive int, got {supersample}")
        self.geometry = geometry
        self.noise = float(noise)
        self.preset = preset
        self.supersample = int(supersample)

    @classmethod
    def uniform(
        cls,
        size: int | tuple[int, int],
        num_angles: int,
        num_detectors: int | None = None,
        noise: float = 0.05,
        preset: str = "adler2018",
        supersample: int = 4,
        dtype=None,
    ) -> CTData:
        """Data for `ParallelBeamGeometry.uniform(shape, num_angles, num_detectors, dtype=dtype)`.

        `size` is the side of a square image or a pair `(H, W)`; `num_detectors` defaults to
        $\\lceil\\sqrt{H^2 + W^2}\\rceil$.
        """
        if _is_int(size):
            shape = (int(size), int(size))
        elif isinstance(size, (tuple, list)) and len(size) == 2 and all(_is_int(n) for n in size):
            shape = (int(size[0]), int(size[1]))
        else:
            raise TypeError(f"size must be a positive int or a pair of positive ints (H, W), got {size!r}")
        if min(shape) < 1:
            raise ValueError(f"size must be positive, got {size!r}")
        geometry = ParallelBeamGeometry.uniform(shape, num_angles, num_detectors, dtype=dtype)
        return cls(geometry, noise, preset, supersample)

    @property
    def shape(self) -> tuple[int, int]:
        """The image shape `(H, W)`."""
        return self.geometry.shape

    @property
    def operator(self) -> RadonTransform | XRayTransform:
        """The discrete forward operator (for models and losses): `RadonTransform(geometry)` for a
        parallel-beam geometry, `XRayTransform(geometry)` for a fan-beam one."""
        if isinstance(self.geometry, ParallelBeamGeometry):
            return RadonTransform(self.geometry)
        return XRayTransform(self.geometry)

    def sample(self, key: PRNGKeyArray) -> Sample:
        """One sample: `Sample(y (num_angles, num_detectors), x (H, W))`, deterministic given `key`."""
        _check_key(key, "CTData.sample")
        return _sample(self, key)

    def batch(self, key: PRNGKeyArray, batch_size: int) -> Sample:
        """`batch_size` samples from `jax.random.split(key, batch_size)`: leading axis `batch_size`.

        Sample `b` of the batch equals `self.sample(jax.random.split(key, batch_size)[b])`.
        """
        _check_key(key, "CTData.batch")
        if not _is_int(batch_size):
            raise TypeError(f"batch_size must be a positive int, got {batch_size!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size}")
        return _batch(self, jax.random.split(key, batch_size))


def _draw(data: CTData, key: PRNGKeyArray) -> Sample:
    k_phantom, k_noise = jax.random.split(key)
    dtype = _geometry_dtype(data.geometry)
    phantom = random_ellipse_phantom(k_phantom, data.shape, data.preset, dtype=dtype)
    x = rasterize(phantom, data.shape, data.supersample)
    y = gaussian_noise(k_noise, ellipse_sinogram(phantom, data.geometry), data.noise)
    return Sample(y, x)


# Compiled once per (data statics, shapes); the geometry is a traced argument.
_sample = eqx.filter_jit(_draw)
_batch = eqx.filter_jit(lambda data, keys: jax.vmap(functools.partial(_draw, data))(keys))


def shepp_logan_sample(data: CTData, key: PRNGKeyArray | None = None) -> Sample:
    r"""The modified Shepp-Logan phantom as a sample of `data`'s geometry, noise level and supersampling.

    $x$ = `shepp_logan(shape, supersample=data.supersample)` (pixel averages, values in $[0, 1]$),
    $y$ = `ellipse_sinogram(shepp_logan_ellipses(), geometry)` plus Gaussian noise of level
    `data.noise` drawn with `key` (default: the fixed key `jax.random.key(0)`, so the sample is the
    same in every run).

    Example:
        >>> s = shepp_logan_sample(CTData.uniform(16, num_angles=8))
        >>> s.y.shape, s.x.shape
        ((8, 23), (16, 16))
    """
    if not isinstance(data, CTData):
        raise TypeError(f"shepp_logan_sample expects a CTData, got {type(data).__name__}")
    key = jax.random.key(0) if key is None else key
    _check_key(key, "shepp_logan_sample")
    dtype = _geometry_dtype(data.geometry)
    x = shepp_logan(data.shape, supersample=data.supersample, dtype=dtype)
    y = gaussian_noise(key, ellipse_sinogram(shepp_logan_ellipses(dtype), data.geometry), data.noise)
    return Sample(y, x)
