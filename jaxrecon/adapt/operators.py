r"""Parametric families of forward operators $\varphi \mapsto A_\varphi$, differentiable in $\varphi$.

A family is an `equinox.Module` holding a nominal (base) model; `family.operator(phi)` builds the
`LinearOperator` $A_\varphi$ from a parameter pytree $\varphi$ (traceable: it may be a tracer under
`jit`, `grad` or `vmap`), and `family.initial` is the parameter of the nominal operator, so
`family.operator(family.initial)` equals the base operator. They describe the forward-model drift
that `jaxrecon.adapt.adaptation.adapt_to_dataset` calibrates from measurements alone:

- `AngleOffset`: all projection angles shifted, $\theta_k + \varphi$ (radians), or each by its own
  $\varphi_k$ (`per_angle=True`).
- `CentreShift`: the centre of rotation, i.e. the detector offset $s_0 + \varphi$ (pixels).
- `DetectorSpacing`: the bin spacing $\Delta s + \varphi$ (pixels), bounded below by `min_spacing`.
- `BlurWidth`: a Gaussian blur of width $\sigma = \varphi$ (pixels), the kernel built in JAX.
- `Combined`: several of these at once, with a dict of parameters.

The Radon transform is differentiable with respect to its geometry (the derivative of the linear
interpolation weights, defined almost everywhere), so $\partial_\varphi A_\varphi x$ exists for
every family and can be used by gradient-based calibration.

Example:
    >>> geom = ParallelBeamGeometry.uniform((32, 32), 20)
    >>> family = Combined({"angle": AngleOffset(geom), "shift": CentreShift(geom)})
    >>> op = family.operator({"angle": 0.05, "shift": 1.5})  # a RadonTransform
    >>> jax.grad(lambda p: jnp.sum(family.operator(p)(x) ** 2))(family.initial)  # d/dphi
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

from ..operators.convolution import CircularConvolution
from ..operators.geometry import ParallelBeamGeometry
from ..operators.linear_operator import LinearOperator
from ..operators.radon import RadonTransform

__all__ = [
    "OperatorFamily",
    "GeometryFamily",
    "AngleOffset",
    "CentreShift",
    "DetectorSpacing",
    "BlurWidth",
    "Combined",
    "gaussian_kernel_jax",
]


def _param(value, like: Array, family: str, what: str) -> Array:
    """`value` as an array of `like`'s shape and floating dtype; trace-time errors otherwise."""
    if isinstance(value, (dict, list, tuple)) or value is None:
        raise TypeError(f"{family} expects {what} to be an array of shape {like.shape}, got {type(value).__name__}")
    value = jnp.asarray(value)
    if not (jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)):
        raise TypeError(f"{family} expects a real {what} (shape {like.shape}), got dtype {value.dtype}")
    if value.shape != like.shape:
        raise ValueError(f"{family} expects {what} of shape {like.shape}, got shape {value.shape}")
    if not jnp.issubdtype(value.dtype, jnp.floating):
        value = value.astype(like.dtype)
    return value


def _check_geometry(geom, family: str) -> ParallelBeamGeometry:
    if not isinstance(geom, ParallelBeamGeometry):
        raise TypeError(f"{family} expects a ParallelBeamGeometry, got {type(geom).__name__}")
    return geom


def _replace(geom: ParallelBeamGeometry, *, angles=None, spacing=None, offset=None) -> ParallelBeamGeometry:
    """The same geometry with some array leaves replaced (traceable).

    `eqx.tree_at` rather than the constructor: the constructor's value checks would run on concrete
    leaves inside `jit` and fail there.
    """
    new = {"angles": angles, "detector_spacing": spacing, "detector_offset": offset}
    for name, value in new.items():
        if value is None:
            continue
        old = getattr(geom, name)
        value = jnp.asarray(value)
        if value.shape != old.shape:
            raise ValueError(f"the geometry's {name} must keep shape {old.shape}, got {value.shape}")
        geom = eqx.tree_at(lambda g, n=name: getattr(g, n), geom, value.astype(jnp.result_type(old, value)))
    return geom


def _with_min_spacing(geom: ParallelBeamGeometry, min_spacing: float) -> ParallelBeamGeometry:
    """`geom` with a lower bound `min_spacing` on its spacing (concrete geometries, outside jit)."""
    if geom.min_detector_spacing <= min_spacing:
        return geom
    return ParallelBeamGeometry(
        geom.shape, geom.angles, geom.num_detectors, geom.detector_spacing, geom.detector_offset,
        min_detector_spacing=min_spacing,
    )


class OperatorFamily(eqx.Module):
    r"""A differentiable family $\varphi \mapsto A_\varphi$ of linear operators (abstract).

    Subclasses implement `operator(params) -> LinearOperator` and the property `initial` (the
    parameter of the nominal operator). `family(params)` is `family.operator(params)`. The operators
    of one family share `in_shape` and `out_shape`.
    """

    @abc.abstractmethod
    def operator(self, params: PyTree) -> LinearOperator:
        """$A_\\varphi$."""

    @property
    @abc.abstractmethod
    def initial(self) -> PyTree:
        """The parameter of the nominal (base) operator: `operator(initial)` is the base operator."""

    def __call__(self, params: PyTree) -> LinearOperator:
        return self.operator(params)


class GeometryFamily(OperatorFamily):
    r"""A family of Radon transforms $A_\varphi$ = `RadonTransform(geometry(phi))` (abstract).

    Subclasses implement `apply(geom, phi) -> ParallelBeamGeometry`, which changes one aspect of a
    geometry relative to its current value (so `Combined` can chain several families on one
    geometry), and `initial`. `geometry(phi)` = `apply(base_geometry, phi)`.
    """

    base_geometry: ParallelBeamGeometry

    @abc.abstractmethod
    def apply(self, geom: ParallelBeamGeometry, params: Array) -> ParallelBeamGeometry:
        """`geom` with this family's parameter applied."""

    def geometry(self, params: Array) -> ParallelBeamGeometry:
        """The geometry of $A_\\varphi$."""
        return self.apply(self.base_geometry, params)

    def operator(self, params: Array) -> RadonTransform:
        return RadonTransform(self.geometry(params))


class AngleOffset(GeometryFamily):
    r"""Projection angles off by $\varphi$ radians: $\theta_k \mapsto \theta_k + \varphi$.

    With `per_angle=True` the parameter is a vector $(\varphi_k)$ of shape `(num_angles,)` (an
    error per projection) instead of one scalar. `initial` is 0 (of the angles' dtype).

    Note: a global offset of all angles is equivalent to rotating the object by $\varphi$ about the
    centre of rotation, so from measurements alone it is identified only by what pins the object's
    orientation (its support in the square field of view, a prior): see `adapt_to_dataset`.

    Example:
        >>> family = AngleOffset(ParallelBeamGeometry.uniform((32, 32), 20))
        >>> family.operator(0.1).geom.angles[0]  # 0.1
    """

    per_angle: bool = eqx.field(static=True, default=False)

    def __init__(self, base_geometry: ParallelBeamGeometry, *, per_angle: bool = False):
        self.base_geometry = _check_geometry(base_geometry, "AngleOffset")
        if not isinstance(per_angle, bool):
            raise TypeError(f"AngleOffset expects per_angle to be a bool, got {per_angle!r}")
        self.per_angle = per_angle

    @property
    def initial(self) -> Float[Array, "..."]:
        shape = (self.base_geometry.num_angles,) if self.per_angle else ()
        return jnp.zeros(shape, self.base_geometry.angles.dtype)

    def apply(self, geom, params):
        params = _param(params, self.initial, "AngleOffset", "the angle offset (radians)")
        return _replace(geom, angles=geom.angles + params)


class CentreShift(GeometryFamily):
    r"""Centre-of-rotation shift: detector offset $s_0 \mapsto s_0 + \varphi$ (pixel units, scalar).

    A shift $\varphi$ moves every projection by $\varphi$ along the detector (bin centres
    $s_d = (d - (D-1)/2)\Delta s + s_0 + \varphi$). `initial` is 0.

    Example:
        >>> family = CentreShift(ParallelBeamGeometry.uniform((32, 32), 20))
        >>> family.operator(1.5).geom.detector_offset  # 1.5
    """

    def __init__(self, base_geometry: ParallelBeamGeometry):
        self.base_geometry = _check_geometry(base_geometry, "CentreShift")

    @property
    def initial(self) -> Float[Array, "..."]:
        return jnp.zeros((), self.base_geometry.angles.dtype)

    def apply(self, geom, params):
        params = _param(params, self.initial, "CentreShift", "the centre shift (pixels)")
        return _replace(geom, offset=geom.detector_offset + params)


class DetectorSpacing(GeometryFamily):
    r"""Detector bin spacing $\Delta s \mapsto \max(\Delta s + \varphi,\ \text{min\_spacing})$ (pixels, scalar).

    The Radon adjoint reads $\lceil 2/\text{min\_spacing}\rceil$ bins per pixel, a static bound, so
    the learned spacing is clipped at `min_spacing` (default: half the base spacing); there the
    derivative is 0. Lower `min_spacing` if the spacing may shrink further (each halving doubles
    the adjoint's cost). `initial` is 0.

    Example:
        >>> family = DetectorSpacing(ParallelBeamGeometry.uniform((32, 32), 20))
        >>> family.operator(0.1).geom.detector_spacing  # 1.1
    """

    min_spacing: float = eqx.field(static=True)

    def __init__(self, base_geometry: ParallelBeamGeometry, *, min_spacing: float | None = None):
        geom = _check_geometry(base_geometry, "DetectorSpacing")
        if isinstance(geom.detector_spacing, jax.core.Tracer):
            raise TypeError("DetectorSpacing needs a concrete base geometry (its spacing sets min_spacing)")
        spacing = float(geom.detector_spacing)
        if min_spacing is None:
            min_spacing = 0.5 * spacing
        if isinstance(min_spacing, bool) or not isinstance(min_spacing, (int, float, np.floating, np.integer)):
            raise TypeError(f"DetectorSpacing expects min_spacing to be a number, got {min_spacing!r}")
        if not 0 < float(min_spacing) <= spacing:
            raise ValueError(
                f"DetectorSpacing expects 0 < min_spacing <= the base spacing {spacing}, got {min_spacing}"
            )
        self.min_spacing = float(min_spacing)
        self.base_geometry = _with_min_spacing(geom, self.min_spacing)

    @property
    def initial(self) -> Float[Array, "..."]:
        return jnp.zeros((), self.base_geometry.angles.dtype)

    def apply(self, geom, params):
        params = _param(params, self.initial, "DetectorSpacing", "the spacing change (pixels)")
        if geom.min_detector_spacing > self.min_spacing * (1 + 1e-12):
            raise ValueError(
                f"DetectorSpacing(min_spacing={self.min_spacing}) needs a geometry whose min_detector_spacing is at "
                f"most that, got {geom.min_detector_spacing}; use family.geometry(phi) or Combined"
            )
        return _replace(geom, spacing=jnp.maximum(geom.detector_spacing + params, self.min_spacing))


def gaussian_kernel_jax(sigma, size: tuple[int, ...]) -> Array:
    r"""A normalised Gaussian kernel $g_i \propto \exp(-\|i - c\|^2/2\sigma^2)$, $c = (k-1)/2$, built in JAX.

    Differentiable in `sigma` (a scalar, may be traced); equals `jaxrecon.operators.gaussian_kernel`.
    $\sigma \to 0$ tends to a unit impulse (for odd sizes); $|\sigma|$ is used.
    """
    sigma = jnp.asarray(sigma)
    grids = np.meshgrid(*[np.arange(s) - (s - 1) / 2 for s in size], indexing="ij")
    r2 = jnp.asarray(sum(t**2 for t in grids), sigma.dtype)
    tiny = jnp.finfo(sigma.dtype).tiny
    log_g = -r2 / (2 * jnp.maximum(sigma**2, tiny))
    log_g = log_g - jnp.max(log_g)  # the centre weight is exp(0): no underflow to 0/0
    g = jnp.exp(log_g)
    return g / jnp.sum(g)


class BlurWidth(OperatorFamily):
    r"""Gaussian blurs $A_\sigma x = x * g_\sigma$ (circular convolution) of unknown width $\sigma$ (pixels).

    The parameter is $\sigma$ itself (a scalar); `initial` is the nominal `sigma`. The kernel, of
    side `kernel_size` (odd recommended: then centred without a half-pixel shift), is built in JAX
    (`gaussian_kernel_jax`), so $A_\sigma x$ is differentiable in $\sigma$; it equals
    `CircularConvolution(gaussian_kernel(kernel_size, sigma), shape)`.

    Example:
        >>> family = BlurWidth((32, 32), 7, sigma=1.0)
        >>> family.operator(1.5)(jnp.ones((32, 32))).shape
        (32, 32)
    """

    sigma: Float[Array, "..."]
    shape: tuple[int, ...] = eqx.field(static=True)
    kernel_size: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, shape, kernel_size, *, sigma=1.0, dtype=None):
        try:
            shape = tuple(shape)
        except TypeError:
            raise TypeError(f"BlurWidth expects shape to be a tuple of ints, got {shape!r}") from None
        if not shape or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > 0 for n in shape):
            raise ValueError(f"BlurWidth expects shape to be a non-empty tuple of positive ints, got {shape!r}")
        sizes = (kernel_size,) * len(shape) if np.ndim(kernel_size) == 0 else tuple(kernel_size)
        if len(sizes) != len(shape) or not all(
            isinstance(k, (int, np.integer)) and not isinstance(k, bool) and 1 <= k <= n for k, n in zip(sizes, shape)
        ):
            raise ValueError(
                f"BlurWidth expects kernel_size to be an int or {len(shape)} ints in [1, side] for shape {shape}, "
                f"got {kernel_size!r}"
            )
        dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
        sigma = jnp.asarray(sigma, dtype)
        if sigma.ndim != 0:
            raise ValueError(f"BlurWidth expects a scalar sigma, got shape {sigma.shape}")
        if not isinstance(sigma, jax.core.Tracer) and not float(sigma) > 0:
            raise ValueError(f"BlurWidth expects sigma > 0, got {float(sigma)}")
        self.sigma = sigma
        self.shape = tuple(int(n) for n in shape)
        self.kernel_size = tuple(int(k) for k in sizes)

    @property
    def initial(self) -> Float[Array, "..."]:
        return self.sigma

    def kernel(self, sigma) -> Array:
        """The normalised Gaussian kernel of width `sigma`, shape `kernel_size`."""
        sigma = _param(sigma, self.sigma, "BlurWidth", "sigma (pixels)")
        return gaussian_kernel_jax(sigma, self.kernel_size)

    def operator(self, params) -> CircularConvolution:
        return CircularConvolution(self.kernel(params), self.shape, centred=True)


class Combined(OperatorFamily):
    r"""Several families at once, with a dict of parameters `{name: phi_name}`.

    All `GeometryFamily` members act on one geometry (that of the first by name, with the smallest
    `min_spacing` of the `DetectorSpacing` members; they must agree on shape, angles and detector), giving one Radon transform $R_\varphi$; image-space members
    (`BlurWidth`) are applied to the image first: $A_\varphi = R_\varphi B_{\varphi,1} B_{\varphi,2}\cdots$
    (without geometry members, the product of the blurs). The members change separate quantities,
    so the order does not matter. `initial` is the dict of the members' initial parameters.

    Example:
        >>> geom = ParallelBeamGeometry.uniform((32, 32), 20)
        >>> family = Combined({"angle": AngleOffset(geom), "shift": CentreShift(geom)})
        >>> family.initial
        {'angle': Array(0., dtype=float32), 'shift': Array(0., dtype=float32)}
    """

    families: dict[str, OperatorFamily]
    base_geometry: ParallelBeamGeometry | None

    def __init__(self, families: dict[str, OperatorFamily]):
        if not isinstance(families, dict) or not families:
            raise TypeError(f"Combined expects a non-empty dict {{name: OperatorFamily}}, got {families!r}")
        for name, fam in families.items():
            if not isinstance(name, str):
                raise TypeError(f"Combined expects string names, got {name!r}")
            if not isinstance(fam, (GeometryFamily, BlurWidth)):
                raise TypeError(
                    f"Combined expects GeometryFamily or BlurWidth members, got {type(fam).__name__} for {name!r}"
                )
        families = dict(sorted(families.items()))  # pytrees order dict keys: make it explicit
        geos = [f for f in families.values() if isinstance(f, GeometryFamily)]
        blurs = [f for f in families.values() if isinstance(f, BlurWidth)]
        if geos:
            g0 = geos[0].base_geometry
            for f in geos[1:]:
                g = f.base_geometry
                if (g.shape, g.sinogram_shape) != (g0.shape, g0.sinogram_shape) or not _same_arrays(g, g0):
                    raise ValueError(
                        "Combined expects its geometry families to share one base geometry, got "
                        f"{g0.shape}/{g0.sinogram_shape} and {g.shape}/{g.sinogram_shape} (or different angles, "
                        "spacing or offset)"
                    )
        image_shape = geos[0].base_geometry.shape if geos else (blurs[0].shape if blurs else None)
        for f in blurs:
            if f.shape != image_shape:
                raise ValueError(f"Combined expects blurs on images of shape {image_shape}, got shape {f.shape}")
        self.families = families
        self.base_geometry = None
        if geos:  # one geometry for all, with room for every DetectorSpacing member's lower bound
            lows = [f.min_spacing for f in geos if isinstance(f, DetectorSpacing)]
            self.base_geometry = _with_min_spacing(geos[0].base_geometry, min(lows)) if lows else geos[0].base_geometry

    @property
    def initial(self) -> dict[str, Array]:
        return {name: f.initial for name, f in self.families.items()}

    def operator(self, params: dict) -> LinearOperator:
        if not isinstance(params, dict) or set(params) != set(self.families):
            got = sorted(params) if isinstance(params, dict) else type(params).__name__
            raise ValueError(f"Combined expects a dict of parameters with keys {sorted(self.families)}, got {got}")
        geom = self.base_geometry
        blurs = []
        for name, fam in self.families.items():
            if isinstance(fam, GeometryFamily):
                geom = fam.apply(geom, params[name])
            else:
                blurs.append(fam.operator(params[name]))
        op = RadonTransform(geom) if geom is not None else None
        for blur in blurs:
            op = blur if op is None else op @ blur
        return op


def _same_arrays(g, g0) -> bool:
    pairs = [(g.angles, g0.angles), (g.detector_spacing, g0.detector_spacing), (g.detector_offset, g0.detector_offset)]
    if any(isinstance(a, jax.core.Tracer) or isinstance(b, jax.core.Tracer) for a, b in pairs):
        return True  # traced: cannot compare
    return all(np.allclose(np.asarray(a), np.asarray(b)) for a, b in pairs)


def _check_family(family, name: str) -> OperatorFamily:
    if not isinstance(family, OperatorFamily):
        raise TypeError(f"{name} expects an OperatorFamily (e.g. AngleOffset(geom)), got {type(family).__name__}")
    return family
