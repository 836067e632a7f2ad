"""Peer: learned primal-dual built from DeepInverse's blocks (PyTorch, CPU), trained on exported data.

Run by `benchmarks/peer_training.py` with the Python of its own venv (torch, deepinv); never
imported by jaxrecon. The network blocks are DeepInverse's own `PDNet_PrimalBlock` and
`PDNet_DualBlock` (Adler & Öktem's 3-layer, 32-feature, PReLU residual blocks, with DeepInverse's
initialisation); the 10-iteration loop around them follows the paper (and DeepInverse's PDNet
example): h <- Gamma_i(h, A f[1], y), f <- Lambda_i(f, A^T h[0]), memories zero at the start, the
operator and the data divided by ||A||. The operator is the exported sparse matrix of jaxrecon's
projector, so both sides see the same A.

deepinv's package `__init__` imports torchvision (a multi-GB CUDA wheel on this machine class),
which the PDNet blocks do not use: the blocks' module is imported without running that
`__init__` (empty parent packages and a stub for the one symbol `deepinv.models.utils` imports).

    python lpd_deepinv.py DATA_DIR   # reads DATA_DIR/config.json, writes DATA_DIR/peer/*

With `"time_steps": N` in the config it only times N training steps on random data of the right
shapes (the operator must be there) and writes `peer/timing.json`.
"""

import importlib.util
import json
import math
import os
import sys
import time
import types

import numpy as np
import torch


def import_pdnet_blocks():
    root = os.path.dirname(importlib.util.find_spec("deepinv").origin)
    for name, sub in (("deepinv", ""), ("deepinv.models", "models"), ("deepinv.utils", "utils")):
        module = types.ModuleType(name)
        module.__path__ = [os.path.join(root, sub)]
        sys.modules[name] = module
    io = types.ModuleType("deepinv.utils.io")
    io.DownloadError = type("DownloadError", (Exception,), {})
    sys.modules["deepinv.utils.io"] = io
    from deepinv.models.PDNet import PDNet_DualBlock, PDNet_PrimalBlock

    return PDNet_PrimalBlock, PDNet_DualBlock


class _Apply(torch.autograd.Function):
    """v -> M v (v: (n, B)) with the gradient M^T g from a stored transpose: autograd's own backward of a
    sparse product re-sorts the transposed matrix at every call (that made a step ~5x slower)."""

    @staticmethod
    def forward(ctx, m, mt, v):
        ctx.mt = mt
        return m @ v

    @staticmethod
    def backward(ctx, g):
        return None, None, ctx.mt @ g


class LearnedPrimalDual(torch.nn.Module):
    def __init__(self, matrix, op_norm, image_shape, data_shape, iterations=10, primal=5, dual=5):
        super().__init__()
        primal_block, dual_block = import_pdnet_blocks()
        self.primal = torch.nn.ModuleList(
            [primal_block(in_channels=primal + 1, out_channels=primal) for _ in range(iterations)])
        self.dual = torch.nn.ModuleList(
            [dual_block(in_channels=dual + 2, out_channels=dual) for _ in range(iterations)])
        self.A = (matrix / op_norm).to_sparse_csr()
        self.At = (matrix.t() / op_norm).coalesce().to_sparse_csr()
        self.op_norm, self.image_shape, self.data_shape = op_norm, image_shape, data_shape
        self.num_primal, self.num_dual = primal, dual

    def forward(self, y):  # y: (B, 1, *data_shape), unnormalised
        b = y.shape[0]
        y = y / self.op_norm
        f = y.new_zeros((b, self.num_primal, *self.image_shape))
        h = y.new_zeros((b, self.num_dual, *self.data_shape))
        for dual, primal in zip(self.dual, self.primal):
            af = _Apply.apply(self.A, self.At, f[:, 1].reshape(b, -1).t()).t().reshape(b, 1, *self.data_shape)
            h = dual(h, af, y)
            ath = _Apply.apply(self.At, self.A, h[:, 0].reshape(b, -1).t()).t().reshape(b, 1, *self.image_shape)
            f = primal(f, ath)
        return f[:, 0]


def main(data_dir):
    cfg = json.loads(open(os.path.join(data_dir, "config.json")).read())
    torch.manual_seed(cfg["seed"])
    torch.set_num_threads(cfg["threads"])
    # XLA CPU runs with denormals flushed to zero; without the same, this training slowed ~3x after a few hundred
    # steps (denormal activations in the convolutions), which would make the step-time comparison unfair.
    torch.set_flush_denormal(True)
    load = lambda name: np.load(os.path.join(data_dir, name))  # noqa: E731
    rows, cols, vals = load("op_rows.npy"), load("op_cols.npy"), load("op_vals.npy")
    image_shape, data_shape = tuple(cfg["image_shape"]), tuple(cfg["data_shape"])
    m, n = math.prod(data_shape), math.prod(image_shape)
    matrix = torch.sparse_coo_tensor(np.stack([rows, cols]), torch.from_numpy(vals), (m, n)).coalesce()
    model = LearnedPrimalDual(matrix, cfg["op_norm"], image_shape, data_shape)
    out = os.path.join(data_dir, "peer")
    os.makedirs(out, exist_ok=True)
    steps, bs = cfg["steps"], cfg["batch_size"]
    opt = torch.optim.Adam(model.parameters(), lr=cfg["learning_rate"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * min(k, steps) / steps)))

    def step(y, x):
        opt.zero_grad()
        loss = torch.mean((model(y) - x) ** 2)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["clip"])
        opt.step()
        sched.step()
        return loss

    if "time_steps" in cfg:
        y, x = torch.randn(bs, 1, *data_shape), torch.rand(bs, *image_shape)
        times = []
        for _ in range(cfg["time_steps"] + 1):
            t = time.perf_counter()
            step(y, x)
            times.append(time.perf_counter() - t)
        with open(os.path.join(out, "timing.json"), "w") as fh:
            json.dump(dict(first=times[0], steps=times[1:], torch=torch.__version__, threads=torch.get_num_threads()), fh)
        return
    train_y, train_x, val_y = load("train_y.npy"), load("train_x.npy"), load("val_y.npy")

    def validate(step):
        with torch.no_grad():
            rec = model(torch.from_numpy(val_y)[:, None]).numpy()
        np.save(os.path.join(out, f"val_{step}.npy"), rec)

    step_times, losses, start = [], [], time.perf_counter()
    for k in range(steps):
        y = torch.from_numpy(train_y[k * bs:(k + 1) * bs])[:, None]
        x = torch.from_numpy(train_x[k * bs:(k + 1) * bs])
        t = time.perf_counter()
        loss = step(y, x)
        step_times.append(time.perf_counter() - t)
        losses.append(float(loss.detach()))
        if (k + 1) % cfg["validate_every"] == 0 or k + 1 == steps:
            validate(k + 1)
            print(f"peer step {k + 1}/{steps} loss {losses[-1]:.3g} median step {np.median(step_times[1:] or step_times):.3f} s",
                  file=sys.stderr, flush=True)
    result = dict(step_seconds=step_times, loss=losses, total_seconds=time.perf_counter() - start,
                  parameters=sum(p.numel() for p in model.parameters()), torch=torch.__version__,
                  threads=torch.get_num_threads())
    with open(os.path.join(out, "peer.json"), "w") as fh:
        json.dump(result, fh)


if __name__ == "__main__":
    main(sys.argv[1])
