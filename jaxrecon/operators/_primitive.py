r"""Linear projector primitives: a forward/adjoint pair, each the other's transpose, with geometry inputs.

Shared by `fan_beam.py` and `cone_beam.py` (`radon.py` has the same pattern with named inputs). Every
input has a leading batch axis: the data has size B, each geometry input size G in {1, B}; G = 1 is one
geometry shared by the batch (vmap over images), where the multi-image kernel runs. `vmap` folds into
that leading axis; `jvp_rule` differentiates in the data (the same primitive on the tangent, the map
being linear) and in the geometry (through the raw kernel).
"""

from __future__ import annotations

from functools import lru_cache, partial

import jax
import jax.numpy as jnp
from jax.core import ShapedArray
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

__all__ = ["define", "jvp_rule", "pair"]


def _geometry_sizes(name, v, geo):
    b = v.shape[0]
    sizes = tuple(g.shape[0] for g in geo)
    if any(g not in (1, b) for g in sizes):
        raise ValueError(f"{name}: geometry inputs must have leading size 1 or {b} (the batch), got {sizes}")
    return b, sizes


def define(name, raw, multi, out_shape):
    """A primitive running `raw(v, *geo, **statics)` per sample (`multi` for a shared geometry).

    Returns `(primitive, run)`; `out_shape(geo, statics)` is one sample's output shape."""
    def run(v, *geo, **statics):
        b, sizes = _geometry_sizes(name, v, geo)
        if b > 1 and all(g == 1 for g in sizes):
            return multi(v, *(g[0] for g in geo), **statics)
        if b == 1:  # no vmap of one: its gathers would carry a batch index, materialised per gather
            return raw(v[0], *(g[0] for g in geo), **statics)[None]
        geo = tuple(jnp.broadcast_to(g, (b,) + g.shape[1:]) for g in geo)
        return jax.vmap(partial(raw, **statics))(v, *geo)

    def abstract_eval(v, *geo, **statics):
        _geometry_sizes(name, v, geo)
        return ShapedArray((v.shape[0],) + out_shape(geo, statics), v.dtype)

    prim = Primitive(name)
    jitted = lru_cache(maxsize=None)(lambda items: jax.jit(partial(run, **dict(items))))
    prim.def_impl(lambda *args, **statics: jitted(tuple(sorted(statics.items())))(*args))
    prim.def_abstract_eval(abstract_eval)
    mlir.register_lowering(prim, mlir.lower_fun(run, multiple_results=False))

    def batch_rule(args, dims, **statics):
        # Fold the vmapped axis (size S) into the leading axis: v becomes (S*B, ...). A geometry input
        # that is not vmapped keeps G = 1 (shared: no copies, multi-image kernels); one with G = B > 1
        # is tiled to S*B, and a vmapped one with G = 1 is broadcast over the B inner samples.
        size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
        args = [a if d is None else jnp.moveaxis(a, d, 0) for a, d in zip(args, dims)]
        (v, *geo), (v_dim, *geo_dims) = args, dims
        b = v.shape[0] if v_dim is None else v.shape[1]
        if v_dim is None:
            v = jnp.broadcast_to(v, (size,) + v.shape)
        folded = [v.reshape((size * b,) + v.shape[2:])]
        for g, d in zip(geo, geo_dims):
            if d is None:
                if g.shape[0] == 1:
                    folded.append(g)
                    continue
                g = jnp.broadcast_to(g, (size,) + g.shape)
            elif g.shape[1] != b:  # vmapped and shared by the B inner samples
                g = jnp.broadcast_to(g, (size, b) + g.shape[2:])
            folded.append(g.reshape((size * b,) + g.shape[2:]))
        out = prim.bind(*folded, **statics)
        return out.reshape((size, b) + out.shape[1:]), 0

    batching.primitive_batchers[prim] = batch_rule
    return prim, run


def jvp_rule(prim, run, primals, tangents, **statics):
    """Register as `ad.primitive_jvps[prim] = partial(jvp_rule, prim, run)`."""
    v, *geo = primals
    dv, *dgeo = tangents
    out = prim.bind(v, *geo, **statics)
    dout = None
    if type(dv) is not ad.Zero:
        dout = prim.bind(dv, *geo, **statics)
    live = [i for i, t in enumerate(dgeo) if type(t) is not ad.Zero]
    if live:

        def of_geo(*g_live):
            g = list(geo)
            for i, gi in zip(live, g_live):
                g[i] = gi
            return run(v, *g, **statics)

        _, dgeo_out = jax.jvp(of_geo, tuple(geo[i] for i in live), tuple(dgeo[i] for i in live))
        dout = dgeo_out if dout is None else dout + dgeo_out
    return out, ad.Zero.from_primal_value(out) if dout is None else dout


def pair(forward, run_forward, adjoint, run_adjoint, what: str, check=None):
    """Register the derivatives of a forward/adjoint pair from `define`: each is linear in its data with
    the other as its transpose (`check(geo, statics)` may validate or guard the geometry first), and both
    differentiate in the geometry through `jvp_rule`; `what` names the transform in errors."""

    def transpose(partner, ct, v, *geo, **statics):
        if any(ad.is_undefined_primal(g) for g in geo):
            raise NotImplementedError(f"the {what} is not linear in its geometry")
        nones = (None,) * len(geo)
        if type(ct) is ad.Zero:
            return (ad.Zero(v.aval),) + nones
        if check is not None:
            geo = check(geo, statics)
        return (partner.bind(ct, *geo, **statics),) + nones

    ad.primitive_jvps[forward] = partial(jvp_rule, forward, run_forward)
    ad.primitive_jvps[adjoint] = partial(jvp_rule, adjoint, run_adjoint)
    ad.primitive_transposes[forward] = partial(transpose, adjoint)
    ad.primitive_transposes[adjoint] = partial(transpose, forward)
