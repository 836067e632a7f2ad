r"""A noise-level-conditioned denoiser trained on the phantom stream, for plug-and-play reconstruction.

The model is `DnCNN(conditional=True)` (`jaxrecon.nets`): $D_\theta(v, \sigma) = v - R_\theta([v, \sigma\mathbf 1])$,
one network for every noise level in $[0, \sigma_{\max}]$ (FFDNet / DRUNet). Training minimises

$$\mathbb E_{x,\sigma,\varepsilon}\,\tfrac1n\,\|D_\theta(x + \sigma\varepsilon, \sigma) - x\|^2,\qquad
\sigma \sim U[0, \sigma_{\max}],\ \varepsilon \sim N(0, I),$$

over clean images $x$ of the CT data stream: the ground truths of `CTData` (random ellipses, pixel
averages), with $\sigma$ drawn per image in the image's units (absolute, not relative). The
images of training step $k$ are those of `batch_keys(seed, "train", k * batch_size, batch_size)`
(the same phantoms a reconstruction run of that config sees), the noise comes from
`fold_in(split_key(seed, "train", k), 1)`: a pure function of the step, so resuming is exact.
Validation denoises the first `validation_size` validation images at fixed levels.

`pnp_denoiser(net, sigma)` turns the trained network into the `(H, W) -> (H, W)` callable that
`jaxrecon.solvers.pnp_admm` (and the other plug-and-play schemes) take.

Example:
    >>> config = denoiser_config("quick", train={"steps": 3000})
    >>> result = train_denoiser(config, "runs/dncnn_quick")
    >>> net, config = load_denoiser("runs/dncnn_quick")
    >>> x = pnp_admm(op, y, pnp_denoiser(net, 0.02), rho=..., max_iter=50).x
"""

from __future__ import annotations

import copy
import math
import numbers
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..metrics.quality import psnr
from ..nets import DnCNN
from ..phantoms.ellipses import random_ellipse_phantom, rasterize
from .checkpoint import load_checkpoint, load_config
from .data import CTData, batch_keys, split_key
from .distributed import local_part
from .experiment import PRESETS, _DATA, _deep_update, build_data
from .loop import TrainResult, default_optimizer, fit

__all__ = [
    "DENOISERS",
    "NoisyImages",
    "denoiser_config",
    "build_denoiser",
    "clean_images",
    "noisy_images",
    "denoising_loss",
    "evaluate_denoiser",
    "train_denoiser",
    "load_denoiser",
    "pnp_denoiser",
]

DENOISERS = ("dncnn",)

# 64 x 64 (quick), 10 layers of 32 channels (75k parameters), batch 8: measured 0.30-0.33 s per step (mean
# of steps 10-30; compilation 3 s) on 2 CPU cores shared with other jobs (load average 5-6), jax 0.10.2; 48
# channels: 0.68 s. 4000 steps: about 20-22 minutes under that load, less on an idle machine.
_MODEL = {"features": 32, "depth": 10}
_TRAIN = {"steps": 4000, "batch_size": 8, "learning_rate": 1e-3, "sigma_max": 0.2, "validation_size": 16,
          "validate_every": 250, "clip": 1.0, "validation_levels": [0.02, 0.05, 0.1]}


class NoisyImages(NamedTuple):
    """A denoising batch: `noisy` = `clean` + `level` * noise; shapes `(B, H, W)`, `(B,)`, `(B, H, W)`."""

    noisy: Float[Array, "B H W"]
    level: Float[Array, " B"]
    clean: Float[Array, "B H W"]


def denoiser_config(preset: str = "quick", seed: int = 0, **overrides) -> dict:
    """The JSON config of a denoiser run: `{"model": "dncnn", "preset", "seed", "data", "model_options", "train"}`.

    `data` is the reconstruction preset's (its image size, phantom preset and supersampling give the
    images; its views and noise are not used); `model_options` are `DnCNN`'s (`features`, `depth`,
    `kernel_size`); `train` holds `steps`, `batch_size`, `learning_rate`, `sigma_max` (noise levels
    drawn from $U[0, \\sigma_{\\max}]$), `validation_size`, `validate_every`, `clip` and
    `validation_levels` (the $\\sigma$s validation reports). `overrides` replace (nested) entries.

    Example:
        >>> denoiser_config("quick", train={"steps": 10})["train"]["steps"]
        10
    """
    if preset not in PRESETS or "source" in _DATA[preset]:
        ok = tuple(p for p in PRESETS if "source" not in _DATA[p])
        raise ValueError(f"unknown preset {preset!r} for a denoiser; expected one of {ok} (random-ellipse images)")
    config = {
        "model": "dncnn",
        "preset": preset,
        "seed": seed,
        "data": dict(_DATA[preset]),
        "model_options": dict(_MODEL),
        "train": copy.deepcopy(_TRAIN),
    }
    unknown = set(overrides) - set(config)
    if unknown:
        raise ValueError(f"unknown config entries {sorted(unknown)}; expected some of {sorted(config)}")
    config = _deep_update(config, overrides)
    if config["model"] not in DENOISERS:
        raise ValueError(f"unknown denoiser {config['model']!r}; expected one of {DENOISERS}")
    _check_config(config)
    return config


def _check_config(config: dict) -> None:
    def count(table, key, minimum, where):
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
            raise ValueError(f"config {where}{key} must be an int >= {minimum}, got {value!r}")
        table[key] = int(value)

    count(config, "seed", 0, "")
    for key in ("steps", "batch_size", "validation_size", "validate_every"):
        count(config["train"], key, 1, "train.")
    t = config["train"]
    for key in ("learning_rate", "sigma_max"):
        value = t[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value > 0):
            raise ValueError(f"config train.{key} must be a finite number > 0, got {value!r}")
    levels = t["validation_levels"]
    if not isinstance(levels, (list, tuple)) or not levels or not all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and v > 0 for v in levels
    ):
        raise ValueError(f"config train.validation_levels must be a non-empty list of numbers > 0, got {levels!r}")
    t["validation_levels"] = [float(v) for v in levels]


def build_denoiser(config: dict, key=None, dtype=None) -> DnCNN:
    """A freshly initialised conditional `DnCNN` (one channel) with `config["model_options"]`."""
    key = jax.random.key(config["seed"]) if key is None else key
    return DnCNN(1, conditional=True, key=key, dtype=dtype, **config["model_options"])


def _image(data: CTData, key) -> Array:
    """The ground truth `CTData.sample(key).x`, without its sinogram (the same key split as `CTData`)."""
    k_phantom, _ = jax.random.split(key)
    dtype = data.geometry.angles.dtype
    return rasterize(random_ellipse_phantom(k_phantom, data.shape, data.preset, dtype=dtype), data.shape, data.supersample)


_images = eqx.filter_jit(lambda data, keys: jax.vmap(lambda k: _image(data, k))(keys))


def clean_images(data: CTData, keys) -> Float[Array, "B H W"]:
    """The clean images of `keys` (`(B,)` keys): `jax.vmap(data.sample)(keys).x`, computed without the sinograms.

    Example:
        >>> data = CTData.uniform(32, num_angles=8)
        >>> clean_images(data, batch_keys(0, "train", 0, 4)).shape
        (4, 32, 32)
    """
    if not isinstance(data, CTData):
        raise TypeError(f"clean_images expects a CTData, got {type(data).__name__}")
    return _images(data, keys)


@jax.jit
def _add_noise(key, clean, sigma_max):
    k_level, k_noise = jax.random.split(key)
    b = clean.shape[0]
    level = jax.random.uniform(k_level, (b,), clean.dtype, 0, sigma_max)
    noise = jax.random.normal(k_noise, clean.shape, clean.dtype)
    return NoisyImages(clean + level[:, None, None] * noise, level, clean)


def noisy_images(clean: Float[Array, "B H W"], key, sigma_max: float) -> NoisyImages:
    r"""`NoisyImages(clean + sigma_b * eps, sigma, clean)` with $\sigma_b \sim U[0, \sigma_{\max}]$ per image, $\varepsilon \sim N(0, I)$.

    Example:
        >>> batch = noisy_images(jnp.zeros((4, 8, 8)), jax.random.key(0), 0.2)
        >>> batch.level.shape
        (4,)
    """
    clean = jnp.asarray(clean)
    if clean.ndim != 3 or not jnp.issubdtype(clean.dtype, jnp.floating):
        raise ValueError(f"noisy_images expects real images of shape (B, H, W), got {clean.dtype} {tuple(clean.shape)}")
    if isinstance(sigma_max, bool) or not isinstance(sigma_max, numbers.Real) or not sigma_max > 0:
        raise ValueError(f"noisy_images expects sigma_max > 0, got {sigma_max!r}")
    return _add_noise(key, clean, sigma_max)


def denoising_loss(net: DnCNN, batch: NoisyImages) -> Array:
    r"""$\frac1B\sum_b \operatorname{mean}\big((D(v_b, \sigma_b) - x_b)^2\big)$: `fit`'s `loss_fn` for a conditional denoiser.

    Example:
        >>> fit(net, denoising_loss, batch_fn, optimizer, 1000)
    """
    if not isinstance(batch, NoisyImages):
        raise TypeError(f"denoising_loss expects a NoisyImages batch, got {type(batch).__name__}")
    out = jax.vmap(lambda v, s: net(v[None], s)[0])(batch.noisy, batch.level)
    return jnp.mean((out - batch.clean) ** 2)


@eqx.filter_jit
def _denoise_all(net, noisy, levels):
    return jax.vmap(lambda v, s: net(v[None], s)[0])(noisy, levels)


@jax.jit
def _psnrs(xs, refs):
    return jax.vmap(psnr)(xs, refs)


def evaluate_denoiser(net: DnCNN, clean: Float[Array, "N H W"], levels, seed: int = 0) -> dict:
    r"""Mean PSNR (dB) of the noisy and the denoised images at each noise level, and the PSNR gain.

    For each $\sigma$ in `levels` every image gets the noise `fold_in(key(seed), j)` ($j$ the level's
    index) times $\sigma$; PSNR uses each clean image's range (as `evaluate`). Returns
    `{"psnr_noisy_<s>", "psnr_<s>", "gain_<s>"}` for each level `<s>` (as written by `f"{s:g}"`), and
    `"psnr_mean"` over the levels (what the training progress bar shows).

    Example:
        >>> evaluate_denoiser(net, clean_images(data, batch_keys(0, "test", 0, 16)), [0.05])["gain_0.05"]
    """
    clean = jnp.asarray(clean)
    if clean.ndim != 3:
        raise ValueError(f"evaluate_denoiser expects clean images of shape (N, H, W), got {tuple(clean.shape)}")
    out, means = {"psnr_mean": None}, []  # first: the progress bar shows the first PSNR entry
    for j, level in enumerate(levels):
        noise = jax.random.normal(jax.random.fold_in(jax.random.key(seed), j), clean.shape, clean.dtype)
        noisy = clean + level * noise
        denoised = _denoise_all(net, noisy, jnp.full(clean.shape[0], level, clean.dtype))
        p_noisy = float(np.mean(np.asarray(_psnrs(noisy, clean))))
        p = float(np.mean(np.asarray(_psnrs(denoised, clean))))
        out.update({f"psnr_noisy_{level:g}": p_noisy, f"psnr_{level:g}": p, f"gain_{level:g}": p - p_noisy})
        means.append(p)
    out["psnr_mean"] = float(np.mean(means))
    return out


def train_denoiser(config: dict, directory=None, *, progress: bool = True, dtype=None,
                   time_limit: float | None = None, checkpoint_every: int | None = None, mesh=None) -> TrainResult:
    """Train the denoiser of `config` (`denoiser_config`) with `fit`: checkpoints in `directory` (resumed
    from there), validation every `validate_every` steps, `time_limit` seconds per call (see `fit`).
    `mesh` (`data_parallel_mesh()`): data parallel; with several processes each draws the whole batch
    (one noise key for all of it) and keeps its rows (`local_part`).

    Example:
        >>> result = train_denoiser(denoiser_config("quick", train={"steps": 100}), "runs/dncnn")
        >>> result.history["val_psnr_mean"][-1]
    """
    if config.get("model") not in DENOISERS:
        raise ValueError(f"train_denoiser expects a denoiser config (denoiser_config), got model {config.get('model')!r}")
    data = build_data(config, dtype)
    t = config["train"]
    seed, bs, sigma_max = config["seed"], t["batch_size"], t["sigma_max"]
    net = build_denoiser(config, dtype=dtype)

    def batch_fn(k):
        clean = _images(data, batch_keys(seed, "train", k * bs, bs))
        return local_part(_add_noise(jax.random.fold_in(split_key(seed, "train", k), 1), clean, sigma_max))

    val = _images(data, batch_keys(seed, "validation", 0, t["validation_size"]))
    return fit(
        net,
        denoising_loss,
        batch_fn,
        default_optimizer(t["learning_rate"], num_steps=t["steps"], clip=t["clip"]),
        t["steps"],
        validate_fn=lambda m: evaluate_denoiser(m, val, t["validation_levels"], seed),
        validate_every=t["validate_every"],
        checkpoint_dir=directory,
        checkpoint_every=(checkpoint_every or t["validate_every"]) if directory is not None else None,
        config=config,
        progress=progress,
        mesh=mesh,
        time_limit=time_limit,
    )


def load_denoiser(path, dtype=None) -> tuple[DnCNN, dict]:
    """`(net, config)` from a checkpoint written by `train_denoiser` (a run directory or one `step_*` folder).

    `dtype` defaults to the dtype the weights were saved in.

    Example:
        >>> net, config = load_denoiser("runs/dncnn_quick")
        >>> denoise = pnp_denoiser(net, 0.02)
    """
    from .checkpoint import _read_meta, _resolve

    config = load_config(path)
    if config.get("model") not in DENOISERS:
        raise ValueError(f"{str(path)!r} holds a {config.get('model')!r} run, not a denoiser ({DENOISERS}); "
                         "load reconstruction models with jaxrecon.train.experiment.load_trained")
    if dtype is None:
        leaves = _read_meta(_resolve(path))["leaves"]["model"]
        floats = [leaf["dtype"] for leaf in leaves if leaf["dtype"].startswith("float")]
        dtype = floats[0] if floats else None
    if dtype is not None and jnp.dtype(dtype).itemsize == 8 and not jax.config.jax_enable_x64:
        raise ValueError(f"checkpoint {str(path)!r} holds {jnp.dtype(dtype)} weights, which load only "
                         "after jax.config.update('jax_enable_x64', True)")
    net, _, _, _, _ = load_checkpoint(path, model_like=build_denoiser(config, dtype=dtype))
    return net, config


def _apply(net, level, x):
    return net(x[None], level)[0].astype(x.dtype)


def pnp_denoiser(net: DnCNN, noise_level) -> eqx.Partial:
    r"""The `(H, W) -> (H, W)` denoiser $x \mapsto D_\theta(x, \sigma)$ at a fixed $\sigma$ = `noise_level`, for plug-and-play.

    An `equinox.Partial` (a pytree: the weights stay arrays under `jit`); the output has the input's dtype.
    In `pnp_admm` the denoiser acts as $\operatorname{prox}_{(\alpha/\rho) g}$, which for a Gaussian
    denoiser corresponds to $\sigma^2 = \alpha/\rho$: `noise_level` and `rho` are tuned together (e.g. on
    validation samples).

    Example:
        >>> net, _ = load_denoiser("runs/dncnn_quick")
        >>> pnp_admm(op, y, pnp_denoiser(net, 0.03), rho=..., max_iter=50).x
    """
    if not isinstance(net, DnCNN) or not net.conditional:
        raise TypeError(f"pnp_denoiser expects a conditional DnCNN (train_denoiser's model), got {type(net).__name__}"
                        + ("" if not isinstance(net, DnCNN) else " without conditioning"))
    level = jnp.asarray(noise_level)
    if level.ndim != 0 or not jnp.issubdtype(level.dtype, jnp.floating) and not jnp.issubdtype(level.dtype, jnp.integer):
        raise ValueError(f"pnp_denoiser expects noise_level to be a real scalar, got {noise_level!r}")
    if not isinstance(level, jax.core.Tracer) and not float(level) >= 0:
        raise ValueError(f"pnp_denoiser expects noise_level >= 0, got {float(level)}")
    return eqx.Partial(_apply, net, level.astype(net.first.weight.dtype))
