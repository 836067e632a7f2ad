"""Parallel-beam geometry (ASTRA's convention)."""

from __future__ import annotations

import math
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = ["ParallelBeamGeometry"]


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_angles(angles, dtype=None, warn_degrees=True) -> Array:
    """Angles as a non-empty 1-D float array (radians); a warning when they look like degrees (more than one
    turn; `warn_degrees=False` for orbits that span several turns, e.g. helical)."""
    if isinstance(angles, (str, bytes)) or (
        hasattr(angles, "dtype") and not jnp.issubdtype(angles.dtype, jnp.number)
    ):
        raise TypeError(f"angles must be a 1-D array of numbers (radians), got {type(angles).__name__} {angles!r:.60}")
    try:
        angles = jnp.asarray(angles) if dtype is None else jnp.asarray(angles, dtype)
    except TypeError as e:
        raise TypeError(f"angles must be a 1-D array of numbers (radians), got {type(angles).__name__}: {e}") from None
    if jnp.iscomplexobj(angles):
        raise TypeError(f"angles must be real, got dtype {angles.dtype}")
    if not jnp.issubdtype(angles.dtype, jnp.floating):
        angles = angles.astype(jnp.result_type(float))
    if angles.ndim != 1 or angles.shape[0] == 0:
        raise ValueError(
            f"angles must be a non-empty 1-D array (num_angles,), got shape {angles.shape}; "
            "to batch geometries, vmap the constructor"
        )
    if _is_concrete(angles):  # NumPy: no tracer under jit
        a = np.asarray(angles)
        if not np.all(np.isfinite(a)):
            raise ValueError("angles must be finite, got non-finite values")
        span = float(np.max(np.abs(a)))
        if warn_degrees and span > 2 * np.pi + 1e-3:
            warnings.warn(
                f"angles are in radians, but the largest |angle| is {span:.4g} (more than one turn, "
                f"{2 * np.pi:.4f}): they look like degrees; pass np.deg2rad(angles). (Several turns in "
                "radians are fine: silence this with warnings.filterwarnings.)",
                UserWarning,
                stacklevel=3,
            )
    return angles


class ParallelBeamGeometry(eqx.Module):
    r"""2D parallel-beam geometry.

    A ray at angle $\theta$ and detector coordinate $s$ is the line
    $\{(x, y) : x\cos\theta + y\sin\theta = s\}$, with pixel-centre coordinates
    $x = \mathrm{col} - (W-1)/2$, $y = (H-1)/2 - \mathrm{row}$ (unit pixels, row 0 at the top) and
    detector bin $d$ at $s_d = (d - (D-1)/2)\,\Delta s + s_0$. This is ASTRA's ``parallel``
    geometry. `angles`, `detector_spacing` ($\Delta s$) and `detector_offset` ($s_0$, a
    centre-of-rotation shift in pixel units) are array leaves: they can be traced, vmapped over and
    differentiated. `shape` and `num_detectors` are static.

    `min_detector_spacing` (static, default: the given spacing, or 0.5 if it is traced) is a lower
    bound the spacing may never go below: it fixes how many detector bins the exact adjoint reads
    per pixel ($\lceil 2/\text{min}\rceil$). Set it lower when the spacing will be learned.

    Example:
        >>> geom = ParallelBeamGeometry.uniform((128, 128), num_angles=30, num_detectors=183)
        >>> geom.angles.shape, geom.num_detectors
        ((30,), 183)

    A batch of geometries (for `jax.vmap`) is built by vmapping the constructor:
    ``jax.vmap(lambda a: ParallelBeamGeometry((64, 64), a, 91))(angle_sets)``.
    """

    angles: Float[Array, " angles"]
    detector_spacing: Float[Array, ""]
    detector_offset: Float[Array, ""]
    shape: tuple[int, int] = eqx.field(static=True)
    num_detectors: int = eqx.field(static=True)
    min_detector_spacing: float = eqx.field(static=True)

    def __init__(
        self,
        shape: tuple[int, int],
        angles,
        num_detectors: int | None = None,
        detector_spacing=1.0,
        detector_offset=0.0,
        min_detector_spacing: float | None = None,
    ):
        shape = _check_shape(shape)
        if num_detectors is None:
            num_detectors = math.ceil(math.hypot(*shape))
        if isinstance(num_detectors, bool) or not isinstance(num_detectors, (int, np.integer)):
            raise TypeError(f"num_detectors must be an int, got {num_detectors!r}")
        if num_detectors <= 0:
            raise ValueError(f"num_detectors must be positive, got {num_detectors}")
        angles = _check_angles(angles)
        detector_spacing = jnp.asarray(detector_spacing, dtype=angles.dtype)
        detector_offset = jnp.asarray(detector_offset, dtype=angles.dtype)
        if detector_spacing.ndim != 0 or detector_offset.ndim != 0:
            raise ValueError(
                "detector_spacing and detector_offset must be scalars, got shapes "
                f"{detector_spacing.shape} and {detector_offset.shape}"
            )
        if _is_concrete(detector_spacing) and not float(detector_spacing) > 0:
            raise ValueError(f"detector_spacing must be positive and finite, got {float(detector_spacing)}")
        if _is_concrete(detector_offset) and not math.isfinite(float(detector_offset)):
            raise ValueError(f"detector_offset must be finite, got {float(detector_offset)}")
        self.angles = angles
        self.detector_spacing = detector_spacing
        self.detector_offset = detector_offset
        self.shape = shape
        self.num_detectors = int(num_detectors)
        if min_detector_spacing is None:
            min_detector_spacing = float(detector_spacing) if _is_concrete(detector_spacing) else 0.5
        if not 0 < float(min_detector_spacing) <= (float(detector_spacing) if _is_concrete(detector_spacing) else math.inf):
            raise ValueError(
                f"min_detector_spacing must be in (0, detector_spacing], got {min_detector_spacing}"
            )
        self.min_detector_spacing = float(min_detector_spacing)

    @classmethod
    def uniform(
        cls,
        shape: tuple[int, int],
        num_angles: int,
        num_detectors: int | None = None,
        detector_spacing=1.0,
        detector_offset=0.0,
        dtype=None,
    ) -> ParallelBeamGeometry:
        r"""Angles $k\pi/\text{num\_angles}$, $k = 0, \dots, \text{num\_angles}-1$.

        `num_detectors` defaults to $\lceil\sqrt{H^2 + W^2}\rceil$ (every ray through the image).
        """
        if isinstance(num_angles, bool) or not isinstance(num_angles, (int, np.integer)) or num_angles <= 0:
            raise ValueError(f"num_angles must be a positive int, got {num_angles!r}")
        dtype = jnp.result_type(float) if dtype is None else dtype
        angles = jnp.arange(num_angles, dtype=dtype) * (jnp.pi / num_angles)
        return cls(shape, angles, num_detectors, detector_spacing, detector_offset)

    def with_angles(self, angles) -> ParallelBeamGeometry:
        """The same detector and image with other angles (e.g. a block of angles for ART/SGD; traceable)."""
        return ParallelBeamGeometry(
            self.shape, angles, self.num_detectors, self.detector_spacing, self.detector_offset,
            min_detector_spacing=self.min_detector_spacing,
        )

    @property
    def num_angles(self) -> int:
        return self.angles.shape[-1]

    @property
    def sinogram_shape(self) -> tuple[int, int]:
        return (self.num_angles, self.num_detectors)

    def detector_positions(self) -> Float[Array, " detectors"]:
        """Detector-bin centres $s_d$ in pixel units, shape `(num_detectors,)`."""
        d = jnp.arange(self.num_detectors, dtype=self.angles.dtype)
        return (d - (self.num_detectors - 1) / 2) * self.detector_spacing + self.detector_offset


def _check_shape(shape) -> tuple[int, int]:
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(f"shape must be a pair of ints (H, W), got {shape!r}") from None
    if len(shape) != 2 or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in shape):
        raise TypeError(f"shape must be a pair of ints (H, W), got {shape!r}")
    if min(shape) <= 0:
        raise ValueError(f"shape must be positive, got {shape}")
    return (int(shape[0]), int(shape[1]))
