"""Training: data generated on the fly, the optax training loop, checkpoints, evaluation, data parallelism
over devices and processes, self-supervised losses (no ground truth) and the noise-level-conditioned denoiser recipe."""

from .checkpoint import latest_checkpoint, load_checkpoint, load_config, save_checkpoint
from .data import SPLIT_ID, CTData, Sample, batch_keys, shepp_logan_sample, split_key
from .denoiser import (
    NoisyImages,
    denoiser_config,
    denoising_loss,
    evaluate_denoiser,
    load_denoiser,
    pnp_denoiser,
    train_denoiser,
)
from .distributed import agree, initialize_distributed, is_main_process, local_part, process_rows
from .evaluate import evaluate, reconstruct
from .lodopab import LoDoPaBData, evaluate_lodopab, lodopab_data_config
from .loop import TrainResult, default_optimizer, fit, reconstruction_loss, reconstruction_loss_fn
from .self_supervised import (
    equivariant_imaging_loss_fn,
    noise2inverse_loss_fn,
    rotate,
    split_views,
    sure_loss_fn,
)
from .sharding import BATCH_AXIS, data_parallel_mesh, replicate, shard_batch

__all__ = [
    "BATCH_AXIS",
    "CTData",
    "LoDoPaBData",
    "NoisyImages",
    "SPLIT_ID",
    "Sample",
    "TrainResult",
    "agree",
    "batch_keys",
    "data_parallel_mesh",
    "default_optimizer",
    "denoiser_config",
    "denoising_loss",
    "equivariant_imaging_loss_fn",
    "evaluate",
    "evaluate_denoiser",
    "evaluate_lodopab",
    "fit",
    "initialize_distributed",
    "is_main_process",
    "latest_checkpoint",
    "load_checkpoint",
    "load_config",
    "load_denoiser",
    "local_part",
    "lodopab_data_config",
    "noise2inverse_loss_fn",
    "pnp_denoiser",
    "process_rows",
    "reconstruct",
    "reconstruction_loss",
    "reconstruction_loss_fn",
    "replicate",
    "rotate",
    "save_checkpoint",
    "shard_batch",
    "split_key",
    "split_views",
    "sure_loss_fn",
    "train_denoiser",
]
