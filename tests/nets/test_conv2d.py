"""conv2d: XLA's "SAME" convolution in value, and the same gradients as JAX's own rules (float64)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrecon.nets.blocks import ConvStack
from jaxrecon.nets.conv2d import conv2d

jax.config.update("jax_enable_x64", True)


def _reference(x, w):
    return jax.lax.conv_general_dilated(x[None], w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))[0]


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(3, 3, 32, 5), (3, 3, 6, 32), (2, 4, 9, 3), (5, 2, 4, 7), (1, 1, 3, 2)])
def test_value_and_gradients_match_jax_under_vmap(shape):
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (3, 9, 11, shape[2]), jnp.float64)
    w = jax.random.normal(kw, shape, jnp.float64)
    g = jax.random.normal(kg, (3, 9, 11, shape[3]), jnp.float64)

    def pullback(f):
        y, vjp = jax.vjp(lambda x, w: jax.vmap(f, (0, None))(x, w), x, w)
        return (y, *vjp(g))

    for ours, ref in zip(pullback(conv2d), pullback(_reference)):
        np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)


def test_second_order_gradient_of_the_narrow_path():
    x = jax.random.normal(jax.random.key(1), (8, 8, 6), jnp.float64)
    w = jax.random.normal(jax.random.key(2), (3, 3, 6, 2), jnp.float64)

    def hvp(f):
        grad = jax.grad(lambda w: jnp.sum(jnp.sin(f(x, w))))
        return jax.vjp(grad, w)[1](jnp.ones_like(w))[0]

    np.testing.assert_allclose(hvp(conv2d), hvp(_reference), rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_convstack_equals_its_layers_applied_in_order():
    stack = ConvStack(6, 5, hidden=8, key=jax.random.key(3), dtype=jnp.float64)
    stack = eqx.tree_at(lambda s: [a.slope for a in s.activations], stack, [jnp.full(8, 0.3), jnp.full(8, -0.2)])
    x = jax.random.normal(jax.random.key(4), (6, 12, 10), jnp.float64)
    expected = x
    for layer, act in zip(stack.layers[:-1], stack.activations):
        expected = act(layer(expected))
    expected = stack.layers[-1](expected)
    np.testing.assert_allclose(stack(x), expected, rtol=1e-12, atol=1e-12)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"x of shape \(H, W, C\) and w of shape \(kh, kw, C, O\).*\(4, 4, 2\) and \(3, 3, 3, 1\)"):
        conv2d(jnp.zeros((4, 4, 2)), jnp.zeros((3, 3, 3, 1)))
