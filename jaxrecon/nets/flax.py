r"""Adapters that wrap Flax networks (NNX or Linen) as Equinox modules.

Every learned scheme in jaxrecon holds its networks as `equinox.Module`s acting on ONE
channels-first sample, $f_\theta : \mathbb{R}^{C \times H \times W} \to \mathbb{R}^{C' \times H \times W}$,
and iterates them in `lax.scan` over per-iteration weights stacked along a leading axis.
`from_flax` turns a Flax network into such a module:

* an `nnx.Module` becomes an `NNXModule`: its `nnx.GraphDef` is static, its `nnx.Param` arrays are
  the (trainable) leaves `params`, every other array (batch statistics, RNG keys and counters,
  plain array attributes) the non-trainable leaves `state`;
* a `linen.Module` becomes a `LinenModule`: the module (a frozen, hashable dataclass) is static, the
  `"params"` collection is `params`, the other collections (e.g. `"batch_stats"`) are `state`.

Both are pure: calling one never changes it, and gradients with respect to `state` are zero
(`lax.stop_gradient`). A network that updates its state while running (BatchNorm in training mode,
Dropout drawing from its `nnx.Rngs`) is rejected by `__call__` with an error; `call_with_state`
runs it and returns the output together with the updated adapter. Leaves are plain JAX arrays in
nested dicts (typed PRNG keys are stored as their raw `key_data`), so `eqx.filter_grad`, optax,
`eqx.filter_vmap`, `lax.scan` slicing and `eqx.tree_serialise_leaves` all apply directly.

Layout: Flax convolutions are channels-last with a batch axis, `(N, H, W, C)`. With the default
`layout="NCHW->NHWC"` the adapter takes one sample `(C, *spatial)` (any number of spatial axes),
calls the Flax network on `(1, *spatial, C)` and returns its output `(1, *spatial', C')` as
`(C', *spatial')`. `layout=None` passes inputs and outputs through unchanged (non-image networks).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from flax import errors as flax_errors
from flax import linen, nnx
from flax.core import unfreeze
from jaxtyping import Array, PRNGKeyArray, PyTree

__all__ = ["from_flax", "NNXModule", "LinenModule", "LAYOUTS"]

LAYOUTS = ("NCHW->NHWC", None)


# ----------------------------------------------------------------------------------------------
# helpers


def _check_layout(layout, name: str):
    if layout not in LAYOUTS:
        raise ValueError(f"{name} expects layout to be one of {LAYOUTS}, got {layout!r}")
    return layout


def _to_flax_layout(x, layout, name: str):
    """`(C, *spatial)` -> `(1, *spatial, C)` for the channels-last layout."""
    if layout is None:
        return x
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} with layout={layout!r} expects `x` to be an array, got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(
            f"{name} with layout={layout!r} expects one channels-first sample (C, H, W) (at least 2 "
            f"dimensions, no batch axis; batch with jax.vmap), got shape {tuple(x.shape)}; pass layout=None "
            f"for non-image networks"
        )
    return jnp.moveaxis(jnp.asarray(x), 0, -1)[None]


def _from_flax_layout(y, layout, name: str):
    """`(1, *spatial, C')` -> `(C', *spatial)` for the channels-last layout."""
    if layout is None:
        return y
    if not hasattr(y, "shape") or not hasattr(y, "dtype"):
        raise TypeError(
            f"{name} with layout={layout!r} expects the Flax network to return one array, got "
            f"{type(y).__name__}; pass layout=None to get its raw output"
        )
    if y.ndim < 2 or y.shape[0] != 1:
        raise ValueError(
            f"{name} with layout={layout!r} expects the Flax network to return a channels-last batch of one, "
            f"(1, *spatial, C_out), got shape {tuple(y.shape)}"
        )
    return jnp.moveaxis(y[0], -1, 0)


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _encode_keys(tree: PyTree) -> tuple[PyTree, tuple]:
    """Replace typed PRNG key arrays by their raw `key_data` (serialisable uint32 arrays).

    Returns the new tree and, per leaf in flattening order, the key implementation name or None.
    """
    leaves, treedef = jax.tree.flatten(tree)
    impls = tuple(str(jax.random.key_impl(a)) if _is_key(a) else None for a in leaves)
    leaves = [jax.random.key_data(a) if impl else a for a, impl in zip(leaves, impls)]
    return jax.tree.unflatten(treedef, leaves), impls


def _decode_keys(tree: PyTree, impls: tuple) -> PyTree:
    if not any(impls):
        return tree
    leaves, treedef = jax.tree.flatten(tree)
    leaves = [jax.random.wrap_key_data(a, impl=impl) if impl else a for a, impl in zip(leaves, impls)]
    return jax.tree.unflatten(treedef, leaves)


def _stop_gradient(tree: PyTree) -> PyTree:
    return jax.tree.map(lambda a: jax.lax.stop_gradient(a) if eqx.is_inexact_array(a) else a, tree)


def _check_hashable(obj, what: str, name: str) -> None:
    try:
        hash(obj)
    except TypeError as e:
        raise TypeError(
            f"{name} stores the {what} as a static (hashable) field, but it is not hashable: {e}. "
            f"Keep arrays out of module attributes that are not Flax variables"
        ) from None


def _as_plain_dict(tree):
    """Nested mappings (dict, FrozenDict, nnx pure dicts) as plain dicts."""
    if isinstance(tree, Mapping):
        return {k: _as_plain_dict(v) for k, v in tree.items()}
    return tree


# ----------------------------------------------------------------------------------------------
# NNX


class NNXModule(eqx.Module):
    r"""A Flax NNX module as a pure Equinox module: $y = f_\theta(x)$ with $\theta$ the `nnx.Param`s.

    Built from `nnx.split(module, nnx.Param, ...)`: the `GraphDef` is static, the parameters and the
    remaining state are nested dicts of arrays (`nnx.to_pure_dict`). Every call rebuilds a
    fresh module with `nnx.merge`, so nothing the Flax module does leaks into the adapter.

    Attributes:
        params: the `nnx.Param` arrays (trainable; what `eqx.is_inexact_array` and optax see).
        state: every other array of the module (batch statistics, RNG counters and keys, plain
            array attributes), read with `lax.stop_gradient`: a zero gradient. Note that optax
            still visits these leaves when you filter with `eqx.is_inexact_array`; with decoupled
            weight decay restrict the optimiser to `params` (e.g. `eqx.filter(model.params, ...)`)
            or partition with `model.trainable()`.
        graphdef: the static `nnx.GraphDef`.
        layout: `"NCHW->NHWC"` (one channels-first sample in and out, Flax sees `(1, *spatial, C)`)
            or None (inputs and outputs passed through).

    Args:
        module: the `nnx.Module` (not modified; its arrays are shared, not copied).
        layout: see above.

    Example:
        >>> class CNN(nnx.Module):
        ...     def __init__(self, rngs):
        ...         self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
        ...     def __call__(self, x):
        ...         return nnx.relu(self.conv(x))
        >>> net = NNXModule(CNN(nnx.Rngs(0)))
        >>> net(jnp.ones((1, 16, 16))).shape
        (4, 16, 16)
    """

    params: PyTree[Array]
    state: PyTree[Array]
    graphdef: Any = eqx.field(static=True, repr=False)
    layout: str | None = eqx.field(static=True)
    key_impls: tuple = eqx.field(static=True, repr=False)

    def __init__(self, module: nnx.Module, *, layout: str | None = "NCHW->NHWC"):
        if not isinstance(module, nnx.Module):
            raise TypeError(f"NNXModule expects a flax.nnx.Module, got {type(module).__name__}")
        self.layout = _check_layout(layout, "NNXModule")
        graphdef, params, state = nnx.split(module, nnx.Param, ...)
        _check_hashable(graphdef, "nnx GraphDef", "NNXModule")
        self.graphdef = graphdef
        self.params = _as_plain_dict(nnx.to_pure_dict(params))
        self.state, self.key_impls = _encode_keys(_as_plain_dict(nnx.to_pure_dict(state)))

    def to_nnx(self) -> nnx.Module:
        """A fresh `nnx.Module` with this adapter's (e.g. trained) parameters and state."""
        return nnx.merge(self.graphdef, self.params, _decode_keys(self.state, self.key_impls), copy=True)

    def trainable(self) -> "NNXModule":
        """A filter spec for `eqx.partition`/`eqx.filter`: True on the inexact arrays of `params` only."""
        spec = jax.tree.map(lambda _: False, self)
        return eqx.tree_at(lambda m: m.params, spec, jax.tree.map(eqx.is_inexact_array, self.params))

    def _run(self, x, args, kwargs, name: str):
        params, state_in = self.params, _stop_gradient(_decode_keys(self.state, self.key_impls))
        module = nnx.merge(self.graphdef, params, state_in)
        y = module(_to_flax_layout(x, self.layout, name), *args, **kwargs)
        graphdef, new_params, new_state = nnx.split(module, nnx.Param, ...)
        new_params = _as_plain_dict(nnx.to_pure_dict(new_params))
        new_state = _as_plain_dict(nnx.to_pure_dict(new_state))
        if graphdef != self.graphdef or jax.tree.structure((new_params, new_state)) != jax.tree.structure(
            (params, state_in)
        ):
            raise ValueError(
                f"{name}: the NNX module changed its structure while running (it added, removed or retyped "
                f"attributes or variables); an adapter needs a fixed structure. Create all variables in "
                f"__init__"
            )
        return _from_flax_layout(y, self.layout, name), (params, state_in), (new_params, new_state)

    def __call__(self, x: Array, *args, **kwargs) -> Array:
        """$f_\\theta(x)$. `x` is one sample `(C, *spatial)` (for the default layout); extra arguments are
        passed to the NNX module's `__call__`. Raises ValueError if the module updates its own state
        (use `call_with_state`, or switch BatchNorm/Dropout to evaluation mode)."""
        y, old, new = self._run(x, args, kwargs, "NNXModule")
        old, new = dict(zip(("params", "state"), old)), dict(zip(("params", "state"), new))
        changed = [
            jax.tree_util.keystr(path)
            for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(old), jax.tree.leaves(new))
            if a is not b
        ]
        if changed:
            raise ValueError(
                f"NNXModule expects a module that does not update its own variables when called, but it "
                f"updated {', '.join(changed)} (a BatchNorm with use_running_average=False, a Dropout "
                f"drawing from its Rngs, ...). Call it in evaluation mode (e.g. nnx.BatchNorm(..., "
                f"use_running_average=True), nnx.Dropout(..., deterministic=True), or module.eval() "
                f"before wrapping) or use `call_with_state`, which returns the updated adapter"
            )
        return y

    def call_with_state(self, x: Array, *args, **kwargs) -> tuple[Any, "NNXModule"]:
        """Run a module that updates its variables: returns `(output, updated adapter)`.

        The updated adapter holds the new state (e.g. BatchNorm running statistics, advanced RNG
        counters). Under `jax.vmap` over single samples, batch statistics are those of one sample.
        """
        y, _, (new_params, new_state) = self._run(x, args, kwargs, "NNXModule.call_with_state")
        new_state, _ = _encode_keys(new_state)
        return y, eqx.tree_at(lambda m: (m.params, m.state), self, (new_params, new_state))


# ----------------------------------------------------------------------------------------------
# Linen


class LinenModule(eqx.Module):
    r"""A Flax Linen module with its variables as a pure Equinox module: `module.apply(variables, x)`.

    Attributes:
        params: the `"params"` collection (trainable).
        state: the other collections, e.g. `{"batch_stats": ...}` (read with `lax.stop_gradient`).
        module: the static `linen.Module` (a frozen, hashable dataclass).
        layout: `"NCHW->NHWC"` (one channels-first sample in and out, Flax sees `(1, *spatial, C)`)
            or None (inputs and outputs passed through).

    Args:
        module: an unbound `linen.Module`.
        variables: its variables, e.g. from `module.init` (a mapping of collection name to a
            nested mapping of arrays). `from_flax(module, example_input, key=key)` initialises them.
        layout: see above.

    Example:
        >>> cnn = linen.Conv(4, (3, 3))
        >>> variables = cnn.init(jax.random.key(0), jnp.ones((1, 16, 16, 1)))
        >>> net = LinenModule(cnn, variables)
        >>> net(jnp.ones((1, 16, 16))).shape
        (4, 16, 16)
    """

    params: PyTree[Array]
    state: PyTree[Array]
    module: linen.Module = eqx.field(static=True)
    layout: str | None = eqx.field(static=True)
    key_impls: tuple = eqx.field(static=True, repr=False)

    def __init__(self, module: linen.Module, variables: Mapping[str, Any], *, layout: str | None = "NCHW->NHWC"):
        if not isinstance(module, linen.Module):
            raise TypeError(f"LinenModule expects a flax.linen.Module, got {type(module).__name__}")
        if module.scope is not None:
            raise ValueError(
                "LinenModule expects an unbound linen.Module (as constructed, not from inside another "
                "module's apply or after .bind), got a bound one"
            )
        if not isinstance(variables, Mapping):
            raise TypeError(
                f"LinenModule expects `variables` to be a mapping of collection names to variables (e.g. "
                f"from module.init), got {type(variables).__name__}"
            )
        _check_hashable(module, "linen Module", "LinenModule")
        variables = _as_plain_dict(unfreeze(variables))
        bad = [k for k, v in variables.items() if not isinstance(k, str) or not isinstance(v, Mapping)]
        if bad:
            raise TypeError(
                f"LinenModule expects `variables` to map collection names (str) to nested mappings, got "
                f"entries {bad!r}"
            )
        self.module = module
        self.layout = _check_layout(layout, "LinenModule")
        self.params = variables.pop("params", {})
        self.state, self.key_impls = _encode_keys(variables)

    @property
    def variables(self) -> dict[str, Any]:
        """The Flax variables `{"params": ..., **state}`, e.g. to use the trained network in Flax."""
        return {"params": self.params, **_decode_keys(self.state, self.key_impls)}

    def trainable(self) -> "LinenModule":
        """A filter spec for `eqx.partition`/`eqx.filter`: True on the inexact arrays of `params` only."""
        spec = jax.tree.map(lambda _: False, self)
        return eqx.tree_at(lambda m: m.params, spec, jax.tree.map(eqx.is_inexact_array, self.params))

    def _variables(self):
        return {"params": self.params, **_stop_gradient(_decode_keys(self.state, self.key_impls))}

    def __call__(self, x: Array, *args, rngs: Mapping[str, PRNGKeyArray] | None = None, **kwargs) -> Array:
        """`module.apply(variables, x, *args, rngs=rngs, **kwargs)` in the adapter's layout.

        `rngs` (e.g. `{"dropout": key}`) and the other arguments go to Linen. Raises ValueError if
        the module updates a collection (use `call_with_state`, or run BatchNorm in eval mode)."""
        try:
            y = self.module.apply(self._variables(), _to_flax_layout(x, self.layout, "LinenModule"), *args,
                                  rngs=rngs, **kwargs)
        except flax_errors.ModifyScopeVariableError as e:
            raise ValueError(
                f"LinenModule expects a module that does not update its variables when called, but: {e}. "
                f"Call it in evaluation mode (e.g. BatchNorm(use_running_average=True)) or use "
                f"`call_with_state`, which returns the updated adapter"
            ) from None
        return _from_flax_layout(y, self.layout, "LinenModule")

    def call_with_state(
        self, x: Array, *args, rngs: Mapping[str, PRNGKeyArray] | None = None, **kwargs
    ) -> tuple[Any, "LinenModule"]:
        """Run a module that updates its non-parameter collections: returns `(output, updated adapter)`.

        Only the collections already in `state` are mutable (so `sow` into a new collection is
        ignored). Under `jax.vmap` over single samples, batch statistics are those of one sample.
        """
        name = "LinenModule.call_with_state"
        state = _decode_keys(self.state, self.key_impls)
        y, updates = self.module.apply(
            self._variables(), _to_flax_layout(x, self.layout, name), *args, rngs=rngs,
            mutable=list(state), **kwargs
        )
        new_state = {**state, **_as_plain_dict(unfreeze(updates))}
        if jax.tree.structure(new_state) != jax.tree.structure(state):
            raise ValueError(
                f"{name}: the Linen module created or removed variables while running; an adapter needs a "
                f"fixed structure (initialise all variables in `init`)"
            )
        new_state, _ = _encode_keys(new_state)
        return _from_flax_layout(y, self.layout, name), eqx.tree_at(lambda m: m.state, self, new_state)


# ----------------------------------------------------------------------------------------------
# entry point


def from_flax(
    module: nnx.Module | linen.Module,
    example_input: Array | None = None,
    *,
    key: PRNGKeyArray | None = None,
    variables: Mapping[str, Any] | None = None,
    layout: str | None = "NCHW->NHWC",
    **init_kwargs,
) -> NNXModule | LinenModule:
    r"""Wrap a Flax network as an Equinox module mapping one sample `(C, *spatial) -> (C', *spatial')`.

    * `nnx.Module` -> `NNXModule(module, layout=layout)` (it already holds its parameters; pass no
      `example_input`, `key` or `variables`).
    * `linen.Module` with `variables=` -> `LinenModule(module, variables, layout=layout)`.
    * `linen.Module` with `example_input` and `key` -> initialises
      `variables = module.init(key, x_flax, **init_kwargs)`, where `x_flax` is `example_input`
      in Flax's layout (`(1, *spatial, C)` for the default layout, from one sample `(C, *spatial)`).

    The adapter is a pytree of arrays (parameters trainable, other Flax state non-trainable) with
    the Flax structure static, so it can be differentiated with `eqx.filter_grad`, optimised with
    optax, vmapped, stacked for `lax.scan` and serialised with `eqx.tree_serialise_leaves`.

    Args:
        module: an `nnx.Module` or an unbound `linen.Module`.
        example_input: Linen only: one example input in jaxrecon's layout, for `init`.
        key: Linen only: the PRNG key for `init` (a dict `{"params": k, ...}` is passed through).
        variables: Linen only: existing variables (instead of `example_input` and `key`).
        layout: `"NCHW->NHWC"` (default; channels-first sample in/out, channels-last batch of
            one for Flax) or None (no conversion).
        **init_kwargs: Linen only: extra keyword arguments for `module.init` (e.g. `train=False`).

    Returns:
        An `NNXModule` or a `LinenModule`.

    Example:
        >>> net = from_flax(linen.Conv(2, (3, 3)), jnp.ones((1, 8, 8)), key=jax.random.key(0))
        >>> net(jnp.ones((1, 8, 8))).shape
        (2, 8, 8)
        >>> stacked = eqx.filter_vmap(lambda k: from_flax(nnx.Conv(1, 2, (3, 3), rngs=nnx.Rngs(k))))(
        ...     jax.random.split(jax.random.key(0), 3))
        >>> stacked.params["kernel"].shape
        (3, 3, 3, 1, 2)
    """
    _check_layout(layout, "from_flax")
    if isinstance(module, nnx.Module):
        extras = {"example_input": example_input, "key": key, "variables": variables}
        given = [n for n, v in extras.items() if v is not None] + list(init_kwargs)
        if given:
            raise TypeError(
                f"from_flax expects only the module (and layout) for an nnx.Module, which holds its own "
                f"parameters; got also {', '.join(given)}"
            )
        return NNXModule(module, layout=layout)
    if isinstance(module, linen.Module):
        if variables is not None:
            if example_input is not None or key is not None or init_kwargs:
                raise TypeError(
                    "from_flax expects either `variables` or (`example_input`, `key`) for a linen.Module, "
                    "got both"
                )
            return LinenModule(module, variables, layout=layout)
        if example_input is None or key is None:
            raise TypeError(
                "from_flax expects, for a linen.Module, either `variables=` or an `example_input` and a "
                f"`key` to initialise it; got example_input={'given' if example_input is not None else None}, "
                f"key={'given' if key is not None else None}"
            )
        x = _to_flax_layout(example_input, layout, "from_flax")
        variables = module.init(key, x, **init_kwargs)
        return LinenModule(module, variables, layout=layout)
    raise TypeError(f"from_flax expects a flax.nnx.Module or a flax.linen.Module, got {type(module).__name__}")
