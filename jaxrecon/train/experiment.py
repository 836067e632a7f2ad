r"""Named experiments: a JSON config -> data, model, training run, checkpoint; and back.

A config is a plain dict (stored in every checkpoint's `config.json`), so a checkpoint can be
rebuilt without code: `load_trained(path)` reads the config, rebuilds the data and a model
skeleton, and loads the weights into it.

Presets (CT, Adler & Öktem's setting: random ellipses for training, 30 views, 5% noise):

- `"quick"`: 64 x 64 images, 91 detectors, steps sized to train every model of the comparison on
  2 CPU cores in under 45 minutes; learned schemes start from FBP (`init="fbp"`) and their
  residual blocks start small (`last_scale=0.1`) so that short training already helps.
- `"quick15"`: the quick preset with 15 views instead of 30: the paper's undersampling ratio
  (30 views at 128 x 128 is 15 views per 64 pixels of width), a harder problem where TV is weaker;
  same models and steps as `"quick"`.
- `"standard"`: the paper's data setting (128 x 128 images, 30 views, 183 detectors, 5% noise)
  with the quick preset's models, steps sized so that LPD, LGD and the U-Net each train on 2 CPU
  cores in under 2 hours (resumable across sessions with `time_limit` / `jaxrecon train --minutes`).
- `"paper"`: 128 x 128 images, 183 detectors, the paper's architectures (LPD/LGD: 10
  iterations, width 32, LPD from zero) and long training; for a GPU. LPD as in the authors' code
  (adler-j/learned_primal_dual, `ellipses/learned_primal_dual.py`): 1e5 steps of batch 5, Adam with
  `b2=0.99`, Glorot-uniform weights and zero biases (`weight_init="glorot"`).

LoDoPaB-CT (measured-data benchmark; `jaxrecon.train.lodopab`): `config["data"] = {"source": "lodopab",
"path": FOLDER, "shape": [H, W], "num_angles": A, "num_detectors": D}` trains on the files instead
(`lodopab_data_config(FOLDER)` reads the shapes from them). The `"lodopab"` preset is the challenge
geometry (362 x 362 images, 1000 angles, 513 detectors) with the paper preset's models and one pass
over the 35820 training samples; training LPD at that size is for an accelerator. Any other preset
takes LoDoPaB data as an override: `experiment_config("lpd", "quick", data=lodopab_data_config(FOLDER))`.
Random-ellipse configs have no `"source"` entry.

Losses (`config["train"]["loss"]`, options in `config["train"]["loss_options"]`): `"supervised"` (the
mean squared error against the truth, `reconstruction_loss_fn`; the default) or a self-supervised loss
that never sees a truth (`jaxrecon.train.self_supervised`; the training batches then carry no `x`,
validation still scores against truths): `"noise2inverse"` (options `num_splits` 2, `domain`
"measurement", `filter` "ram-lak"), `"sure"` (`noise_level`: the data's, `epsilon` 0.01) and `"ei"`
(robust equivariant imaging: `alpha` None, the authors' balance of `equivariant_imaging_loss_fn`,
`noise_level`: the data's, `epsilon` 0.01). Their randomness is
seeded by the config's seed.

Models: `"unet"` (FBP + U-Net), `"pgd"`, `"lista"`, `"lgd"`, `"lpd"` (`jaxrecon.nets`) and the deep
equilibrium models `"degrad"`, `"deprox"` (`jaxrecon.deq`: LipschitzCNN regulariser with Lip <= 0.9,
Anderson forward and backward, tolerance 1e-3, at most 30 iterations each way, from 5 CGLS steps).
"""

from __future__ import annotations

import copy
import numbers
import time
from pathlib import Path
from typing import Any

import jax

from ..data.lodopab import IMAGE_SHAPE, NUM_ANGLES, NUM_DETECTORS, SPLITS
from ..deq import DEGrad, DEProx
from ..nets import LISTA, LearnedGradientDescent, LearnedPrimalDual, PostProcessing, UNet, UnrolledPGD
from .checkpoint import load_checkpoint, save_checkpoint
from .data import CTData, Sample, batch_keys
from .distributed import process_rows
from .evaluate import evaluate
from .lodopab import LoDoPaBData, lodopab_streams
from .loop import TrainResult, default_optimizer, fit, reconstruction_loss_fn
from .self_supervised import equivariant_imaging_loss_fn, noise2inverse_loss_fn, sure_loss_fn

__all__ = [
    "MODELS",
    "PRESETS",
    "LOSSES",
    "experiment_config",
    "build_data",
    "build_model",
    "build_loss",
    "train",
    "save_trained",
    "load_trained",
    "load_pretrained",
    "timed",
]

MODELS = ("unet", "pgd", "lista", "lgd", "lpd", "degrad", "deprox")

_DATA = {
    "quick": dict(size=64, num_angles=30, num_detectors=91, noise=0.05, preset="adler2018", supersample=4),
    "quick15": dict(size=64, num_angles=15, num_detectors=91, noise=0.05, preset="adler2018", supersample=4),
    "standard": dict(size=128, num_angles=30, num_detectors=183, noise=0.05, preset="adler2018", supersample=4),
    "paper": dict(size=128, num_angles=30, num_detectors=183, noise=0.05, preset="adler2018", supersample=4),
    "lodopab": dict(source="lodopab", path=None, shape=list(IMAGE_SHAPE), num_angles=NUM_ANGLES,
                    num_detectors=NUM_DETECTORS),
}

_DEQ = dict(features=32, depth=4, lipschitz=0.9, tol=1e-3, max_iter=30)
_MODEL = {
    "quick": {
        "unet": dict(channels=32, levels=4),
        "pgd": dict(num_iterations=10, kernel_size=5),
        "lista": dict(num_iterations=10, alpha=1.0, wavelet="db2", kernel_size=5),
        "lgd": dict(num_iterations=10, hidden=32, num_memory=5, init="fbp", last_scale=0.1),
        "lpd": dict(num_iterations=10, hidden=32, num_primal=5, num_dual=5, init="fbp", last_scale=0.1,
                    weight_init="glorot"),
        "degrad": _DEQ,
        "deprox": _DEQ,
    },
    "paper": {
        "unet": dict(channels=64, levels=5),
        "pgd": dict(num_iterations=10, kernel_size=5),
        "lista": dict(num_iterations=10, alpha=1.0, wavelet="db2", kernel_size=5),
        "lgd": dict(num_iterations=10, hidden=32, num_memory=5, init="fbp"),
        "lpd": dict(num_iterations=10, hidden=32, num_primal=5, num_dual=5, init="zero", weight_init="glorot"),
        "degrad": _DEQ,
        "deprox": _DEQ,
    },
}

_MODEL["standard"] = _MODEL["quick"]  # the quick recipe on the paper's data
_MODEL["quick15"] = _MODEL["quick"]  # the quick recipe with half the views

_TRAIN = {
    "quick": {
        "unet": dict(steps=1500, batch_size=4, learning_rate=1e-3),
        "pgd": dict(steps=300, batch_size=4, learning_rate=1e-2),
        "lista": dict(steps=300, batch_size=4, learning_rate=1e-2),
        "lgd": dict(steps=1500, batch_size=4, learning_rate=1e-3),
        "lpd": dict(steps=2500, batch_size=4, learning_rate=1e-3, b2=0.99),
        "degrad": dict(steps=300, batch_size=4, learning_rate=1e-3),
        "deprox": dict(steps=300, batch_size=4, learning_rate=1e-3),
    },
    # Sized by measured steps (batch 4, 128 x 128, 2 cores, benchmarks/results/training_speed_standard.md):
    # LPD 1.34 s, LGD 1.05 s, U-Net 0.83 s per step, so that each trains in under 2 hours (1.9 h at most).
    "standard": {
        "unet": dict(steps=8000, batch_size=4, learning_rate=1e-3),
        "pgd": dict(steps=300, batch_size=4, learning_rate=1e-2),
        "lista": dict(steps=300, batch_size=4, learning_rate=1e-2),
        "lgd": dict(steps=6500, batch_size=4, learning_rate=1e-3),
        "lpd": dict(steps=5000, batch_size=4, learning_rate=1e-3, b2=0.99),
        "degrad": dict(steps=300, batch_size=4, learning_rate=1e-3),
        "deprox": dict(steps=300, batch_size=4, learning_rate=1e-3),
    },
    "paper": {
        "unet": dict(steps=50000, batch_size=8, learning_rate=1e-3),
        "pgd": dict(steps=5000, batch_size=8, learning_rate=1e-2),
        "lista": dict(steps=5000, batch_size=8, learning_rate=1e-2),
        "lgd": dict(steps=50000, batch_size=4, learning_rate=1e-3),
        "lpd": dict(steps=100000, batch_size=5, learning_rate=1e-3, b2=0.99),
        "degrad": dict(steps=20000, batch_size=4, learning_rate=1e-3),
        "deprox": dict(steps=20000, batch_size=4, learning_rate=1e-3),
    },
}

_TRAIN["quick15"] = _TRAIN["quick"]
# LoDoPaB-CT: the paper's models, batch sizes and learning rates (LPD: batch 1, the 362 x 362 images being
# large), one pass over the training split
_MODEL["lodopab"] = _MODEL["paper"]
_TRAIN["lodopab"] = {name: dict(t) for name, t in _TRAIN["paper"].items()}
_TRAIN["lodopab"]["lpd"]["batch_size"] = 1
for _t in _TRAIN["lodopab"].values():
    _t["steps"] = -(-SPLITS["train"] // _t["batch_size"])

PRESETS = tuple(_DATA)

LOSSES = ("supervised", "noise2inverse", "ei", "sure")
# Default options of each loss; "noise_level": None is filled with the data's noise level.
_LOSS_OPTIONS = {
    "supervised": {},
    "noise2inverse": {"num_splits": 2, "domain": "measurement", "filter": "ram-lak"},
    "ei": {"alpha": None, "noise_level": None, "epsilon": 1e-2},
    "sure": {"noise_level": None, "epsilon": 1e-2},
}


def _deep_update(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in overrides.items():
        out[k] = _deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def experiment_config(model: str, preset: str = "quick", seed: int = 0, **overrides: Any) -> dict:
    """The JSON config of one training run: `{"model", "preset", "seed", "data", "model_options",
    "train"}`; `overrides` replace (nested) entries, e.g. `train={"steps": 10}`.

    Example:
        >>> experiment_config("lpd", "quick", train={"steps": 10})["train"]["steps"]
        10
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; expected one of {MODELS}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {PRESETS}")
    data = _DATA[preset]
    source = (overrides.get("data") or {}).get("source", data.get("source"))
    if source == "lodopab":  # LoDoPaB files under another preset's model and training recipe
        data = _DATA["lodopab"]
    elif source != data.get("source"):
        raise ValueError(f"unknown data source {source!r}; expected 'lodopab' (random ellipses have no source entry)")
    config = {
        "model": model,
        "preset": preset,
        "seed": seed,
        "data": data,
        "model_options": _MODEL[preset][model],
        "train": dict(_TRAIN[preset][model], validation_size=16, validate_every=250, clip=1.0, loss="supervised",
                      loss_options={}),
    }
    unknown = set(overrides) - set(config)
    if unknown:
        raise ValueError(f"unknown config entries {sorted(unknown)}; expected some of {sorted(config)}")
    config = _deep_update(config, overrides)
    _check_counts(config)
    _resolve_loss(config)
    return config


def _resolve_loss(config: dict) -> None:
    """Check `train.loss` and fill `train.loss_options` with the loss's defaults (noise level: the data's)."""
    t = config["train"]
    name, given = t.get("loss", "supervised"), t.get("loss_options") or {}
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r} in config train.loss; expected one of {LOSSES}")
    if not isinstance(given, dict):
        raise ValueError(f"config train.loss_options must be a dict, got {given!r}")
    defaults = dict(_LOSS_OPTIONS[name])
    unknown = set(given) - set(defaults)
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)} for the {name} loss; expected some of {sorted(defaults)}")
    if "noise_level" in defaults:
        defaults["noise_level"] = config["data"].get("noise")
    options = {**defaults, **given}
    if name == "sure" and options["noise_level"] is None:
        raise ValueError("the sure loss needs the data's Gaussian noise level: set train.loss_options.noise_level")
    t["loss"], t["loss_options"] = name, options


def build_loss(config: dict, op):
    """`loss_fn(model, batch)` for `fit` from `config["train"]["loss"]` and its options (see the module docstring).

    A config without a `"loss"` entry (checkpoints written before the self-supervised losses) is supervised.

    Example:
        >>> config = experiment_config("lpd", "quick", train={"loss": "sure"})
        >>> loss_fn = build_loss(config, build_data(config).operator)
    """
    t = config["train"]
    name, options = t.get("loss", "supervised"), dict(t.get("loss_options") or {})
    if name == "supervised":
        return reconstruction_loss_fn(op)
    if name == "noise2inverse":
        return noise2inverse_loss_fn(op, **options)
    if name == "ei":
        return equivariant_imaging_loss_fn(op, seed=config["seed"], **options)
    if name == "sure":
        return sure_loss_fn(op, seed=config["seed"], **options)
    raise ValueError(f"unknown loss {name!r} in config train.loss; expected one of {LOSSES}")


def _check_counts(config: dict) -> None:
    """The integer entries of a config that must be >= 0 (seed) or >= 1 (sizes, steps, ...)."""
    def check(where, key, minimum):
        table = config[where] if where else config
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
            raise ValueError(f"config {where + '.' if where else ''}{key} must be an int >= {minimum}, got {value!r}")
        table[key] = int(value)  # plain ints in the JSON config

    check(None, "seed", 0)
    for key in ("steps", "batch_size", "validation_size", "validate_every"):
        check("train", key, 1)
    for key in ("size", "num_angles", "num_detectors"):
        if key in config["data"]:
            check("data", key, 1)


def build_data(config: dict, dtype=None) -> CTData | LoDoPaBData:
    """The data of a config: `CTData` (random ellipses), or `LoDoPaBData` (its geometry; no file is read)."""
    d = config["data"]
    if d.get("source") == "lodopab":
        return LoDoPaBData.from_config(d, dtype)
    if "source" in d:
        raise ValueError(f"unknown data source {d['source']!r} in the config; expected 'lodopab' or none")
    return CTData.uniform(
        d["size"], d["num_angles"], d["num_detectors"], d["noise"], d["preset"], d["supersample"], dtype=dtype
    )


def build_model(config: dict, op, key=None, dtype=None):
    """A freshly initialised model for `config["model"]` with `config["model_options"]`."""
    name, options = config["model"], dict(config["model_options"])
    key = jax.random.key(config["seed"]) if key is None else key
    if name == "unet":
        return PostProcessing(UNet(1, 1, residual=True, key=key, dtype=dtype, **options), init="fbp")
    cls = {"pgd": UnrolledPGD, "lista": LISTA, "lgd": LearnedGradientDescent, "lpd": LearnedPrimalDual,
           "degrad": DEGrad, "deprox": DEProx}[name]
    return cls(op, key=key, dtype=dtype, **options)


def train(config: dict, directory=None, *, progress: bool = True, mesh=None, dtype=None,
          time_limit: float | None = None, checkpoint_every: int | None = None) -> TrainResult:
    """Train the model of `config` on fresh random-ellipse batches (or LoDoPaB-CT files); validate on a fixed
    validation set (PSNR/SSIM every `validate_every` steps); checkpoint into `directory` (and resume from
    it) every `checkpoint_every` steps (default: at every validation) and at the end.

    `time_limit` (seconds) stops the run early with a checkpoint (see `fit`); calling `train` again
    with the same config and directory resumes it exactly, until `config["train"]["steps"]` are done.

    The loss is `build_loss(config, op)`; with a self-supervised one the training batches are
    `Sample(y, None)`: no truth reaches the training step (validation scores against truths).

    Training step $k$ uses `batch_keys(seed, "train", k * batch_size, batch_size)`; validation uses
    the first `validation_size` keys of the validation stream: the splits never overlap. LoDoPaB-CT:
    step $k$ reads train samples `k * batch_size, ...` (mod the split's length), validation the first
    `validation_size` samples of the validation split (`lodopab_streams`).

    `mesh` (`data_parallel_mesh()`): data parallel over its devices. With several processes
    (`initialize_distributed`) each draws (or reads) only its rows of every batch (`process_rows`), and
    the run equals the single-process one up to the order of the floating-point sums.
    """
    data = build_data(config, dtype)
    op = data.operator
    model = build_model(config, op, dtype=dtype)
    t = config["train"]
    batch_fn, val = _streams(config, data)
    loss_fn = build_loss(config, op)
    if t.get("loss", "supervised") != "supervised":
        with_truth = batch_fn

        def batch_fn(k):
            return Sample(with_truth(k).y, None)

    return fit(
        model,
        loss_fn,
        batch_fn,
        default_optimizer(t["learning_rate"], num_steps=t["steps"], clip=t["clip"],
                          **{k: t[k] for k in ("b2",) if k in t}),  # b2: optax's default unless the config sets it
        t["steps"],
        validate_fn=lambda m: evaluate(m, op, val, timed=False),
        validate_every=t["validate_every"],
        checkpoint_dir=directory,
        checkpoint_every=(checkpoint_every or t["validate_every"]) if directory is not None else None,
        config=config,
        progress=progress,
        mesh=mesh,
        time_limit=time_limit,
    )


def _streams(config: dict, data):
    """`(batch_fn, validation samples)` of a config: deterministic in the step; `batch_fn(k)` is this
    process's rows of batch `k`."""
    t = config["train"]
    seed, bs = config["seed"], t["batch_size"]
    rows = process_rows(bs)  # this process's rows of each batch (all of them with one process)
    if isinstance(data, LoDoPaBData):
        return lodopab_streams(data, bs, t["validation_size"], rows=rows)
    val = jax.jit(jax.vmap(data.sample))(batch_keys(seed, "validation", 0, t["validation_size"]))
    sample_batch = jax.jit(jax.vmap(data.sample))

    def batch_fn(k):
        return sample_batch(batch_keys(seed, "train", k * bs + rows.start, rows.stop - rows.start))

    return batch_fn, val


def save_trained(directory, result: TrainResult, config: dict) -> Path:
    """Checkpoint a finished run (model only) into `directory`."""
    step = len(result.history.get("loss", []))
    return save_checkpoint(directory, model=result.model, step=step, config=config, history=result.history)


def load_trained(path, dtype=None):
    """`(model, data, config)` from a checkpoint written by `train` (a `step_*` folder or its parent).

    `dtype` defaults to the dtype the weights were saved in. `data` is a `CTData`, or for a LoDoPaB-CT
    run a `LoDoPaBData` rebuilt from the config alone (the files are needed only to read samples).

    Example:
        >>> model, data, config = load_trained("runs/lpd")
        >>> x = model(data.sample(split_key(0, "test", 0)).y, data.operator)
    """
    from .checkpoint import _read_meta, _resolve, load_config

    config = load_config(path)
    if config.get("model") not in MODELS:
        raise ValueError(f"{str(path)!r} holds a {config.get('model')!r} run, not a reconstruction model {MODELS}"
                         + ("; load a denoiser with jaxrecon.train.denoiser.load_denoiser" if config.get("model") == "dncnn" else ""))
    if dtype is None:  # the dtype the model was saved in (checkpoints record every leaf's dtype)
        leaves = _read_meta(_resolve(path))["leaves"]["model"]
        floats = [leaf["dtype"] for leaf in leaves if leaf["dtype"].startswith("float")]
        dtype = floats[0] if floats else None
    if dtype is not None and jax.numpy.dtype(dtype).itemsize == 8 and not jax.config.jax_enable_x64:
        raise ValueError(f"checkpoint {str(path)!r} holds {jax.numpy.dtype(dtype)} weights, which load only "
                         "after jax.config.update('jax_enable_x64', True)")
    data = build_data(config, dtype)
    skeleton = build_model(config, data.operator, dtype=dtype)  # a template for the stored leaves
    model, _, _, _, _ = load_checkpoint(path, model_like=skeleton)
    return model, data, config


def load_pretrained(name: str = "lpd_quick", dtype=None):
    """`(model, data)` of a model shipped inside the package (`jaxrecon/pretrained/<name>/`).

    `lpd_quick`: learned primal-dual, quick preset (64 x 64, 30 views, 91 detectors, 5% noise),
    the 8000 steps of `jaxrecon train --model lpd --preset quick --steps 8000` (seed 0, float32, Glorot
    initialisation and Adam b2 0.99; the full checkpoint is `benchmarks/checkpoints/lpd_quick_8k`; its
    scores are the LPD row of `benchmarks/results/comparison_quick.md`).
    `lpd_standard`: learned primal-dual, standard preset (128 x 128, 30 views, 183 detectors, 5% noise:
    Adler & Öktem's data), the preset's 5000 steps with the same recipe (full checkpoint
    `benchmarks/checkpoints/lpd_standard_5k`; scores: the LPD row of `comparison_standard.md`).

    Example:
        >>> model, data = load_pretrained()
        >>> x = model(shepp_logan_sample(data).y, data.operator)
    """
    from importlib.resources import files

    root = files("jaxrecon") / "pretrained"
    path = root / name
    if not path.is_dir():
        available = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise ValueError(f"no pretrained model {name!r}; available: {available}")
    model, data, _ = load_trained(Path(str(path)), dtype=dtype)
    return model, data


def timed(fn, *args, repeats: int = 3):
    """Median wall time of `fn(*args)` after one warm-up call (which is timed separately)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2], first

