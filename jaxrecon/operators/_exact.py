r"""Multiply-adds that round the same way whether or not the compiler fuses them into an FMA.

XLA CPU contracts `a * b + c` into a fused multiply-add when the multiply and the add land in the same
fusion, and fusion decisions differ between programs. A projector and its adjoint compute the same
interpolation positions in two programs; a position $p \approx 500$ that rounds differently by one ulp
($6\cdot 10^{-5}$ in float32) moves an interpolation weight by that much, so the float32 adjoint would
only match the forward to ~$10^{-5}$ per weight. Here every product is exact (both factors are split
into parts with few significant bits, by masking mantissa bits), so an FMA and a separate
multiply-then-add round identically, and the sums are taken in a fixed order.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["split3", "madd_int", "madd", "int_parts", "madd_parts"]


def split3(a):
    """`a = a1 + a2 + a3` exactly, each part with at most 8 (float32) or 18 (float64) significant bits."""
    if a.dtype == jnp.float64:
        itype, clear = jnp.int64, 35
    elif a.dtype == jnp.float32:
        itype, clear = jnp.int32, 16
    else:
        return a, jnp.zeros_like(a), jnp.zeros_like(a)
    mask = jnp.asarray(~((1 << clear) - 1), itype)

    def head(v):
        return jax.lax.bitcast_convert_type(jax.lax.bitcast_convert_type(v, itype) & mask, v.dtype)

    a1 = head(a)
    rest = a - a1  # exact: the cleared low bits
    a2 = head(rest)
    return a1, a2, rest - a2


@jax.custom_jvp
def madd_int(c, k, a):
    """`c + k * a` for `k` holding integers below $2^{16}$ (any float `a`), FMA-invariant."""
    for part in split3(a):
        c = c + k * part
    return c


@madd_int.defjvp
def _madd_int_jvp(primals, tangents):
    c, k, a = primals
    dc, dk, da = tangents
    return madd_int(c, k, a), dc + dk * a + k * da


@jax.custom_jvp
def madd(c, a, b):
    """`c + a * b` for any floats, FMA-invariant (nine exact partial products, summed largest first)."""
    pa, pb = split3(a), split3(b)
    for i in range(3):
        for j in range(3 - i):
            c = c + pa[i] * pb[j]
    for i in range(1, 3):
        for j in range(3 - i, 3):
            c = c + pa[i] * pb[j]
    return c


@madd.defjvp
def _madd_jvp(primals, tangents):
    c, a, b = primals
    dc, da, db = tangents
    return madd(c, a, b), dc + da * b + a * db


def int_parts(a, max_k: int):
    """`a` as exact parts whose products with any integer `0 <= k < max_k` are exact: two parts of 12
    (float32) or 27 (float64) bits when `max_k <= 4096`, else `split3`. Split once, outside a loop over k."""
    if a.dtype not in (jnp.float32, jnp.float64) or max_k > 4096:
        return split3(a)
    itype, clear = (jnp.int64, 26) if a.dtype == jnp.float64 else (jnp.int32, 12)
    hi = jax.lax.bitcast_convert_type(jax.lax.bitcast_convert_type(a, itype) & ~((1 << clear) - 1), a.dtype)
    return hi, a - hi


def madd_parts(c, k, parts):
    """`c + k * a` from `parts = int_parts(a, max_k)`, for an integer `k < max_k`: FMA-invariant (exact
    products, summed in a fixed order). Derivatives in `a` flow through the last part (the masked leading
    parts have zero derivative, the remainder `a - hi` carries all of `a`'s)."""
    for part in parts:
        c = c + k * part
    return c
