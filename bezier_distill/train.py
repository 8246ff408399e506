"""The training loop, top to bottom: a velocity network fitted along Bezier paths with the fused loss.

One loop serves every stage. Each step takes a batch of control points (x0, guides, x1) from
`pairs` (fresh independent pairs for a 1-RF teacher, a stored coupling for reflow and k-RF
distillation, stored guides for Bezier distillation), draws times t, evaluates x_t = B(t) with
bezier_kernels.bezier, runs the network at (x_t, t) and minimises bezier_kernels.bezier_distill_loss:
target "velocity" fits pred to B'(t), target "endpoint" fits x_t + (1 - t) pred to x1.

Exact resumption: every random draw of step s comes from a generator seeded by (seed, s), the
stored-data order and the running log sums are part of the checkpoint, and the checkpoint holds the
weights, EMA weights, optimizer state and global RNG states bit for bit. A run killed at any point
and rerun makes the same updates as one never stopped (bit-identical on the CPU).

Several ranks (launched by torchrun; see bezier_distill.distributed): the batch of a step is the
global one, drawn alike on every rank, and each rank trains on its rows of it inside
DistributedDataParallel, so the updates are those of one process (to rounding) whatever the number
of ranks; the logged means are averaged over the ranks; rank 0 alone writes the log and checkpoints.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

import bezier_kernels as bk

from . import distributed
from .checkpoint import has_checkpoint, restore, save_checkpoint
from .config import ModelConfig, TrainConfig
from .data import seeded_generator
from .files import atomic_write
from .models import build_model, resolve_model
from .timesteps import sample_times

LOG = "log.jsonl"


@dataclass
class TrainResult:
    model: torch.nn.Module   # final weights
    ema: torch.nn.Module     # EMA of the weights (what later stages sample with)
    step: int            # steps done; less than cfg.steps only when stopped by stop_after
    log: list[dict]      # every log.jsonl entry: step, loss (mean since the last entry), lr, grad_norm


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warmup over cfg.warmup_steps, then constant."""
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr


def ema_decay(cfg: TrainConfig, step: int) -> float:
    """cfg.ema_decay, lowered early on so the average forgets the random initialisation."""
    return min(cfg.ema_decay, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for average, weight in zip(ema.parameters(), model.parameters()):
        average.lerp_(weight, 1.0 - decay)


def optimizer_step(cfg: TrainConfig, loss: Tensor, model: torch.nn.Module, ema: torch.nn.Module,
                   optimizer: torch.optim.Optimizer, step: int) -> Tensor:
    """Backward of loss, gradient clipping, the step's learning rate, the update and the EMA; the gradient norm."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(cfg, step)
    optimizer.step()
    update_ema(ema, model, ema_decay(cfg, step))
    return grad_norm


def read_log(run_dir: str | Path, up_to_step: int | None = None) -> list[dict]:
    """The entries of run_dir/log.jsonl (up to a step); a line cut short by a kill is dropped."""
    path = Path(run_dir) / LOG
    entries = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    entries = [e for e in entries if isinstance(e, dict) and isinstance(e.get("step"), int)]  # not a log entry
    return [e for e in entries if up_to_step is None or e["step"] <= up_to_step]


class IntervalLog:
    """A training loop's running log: the loss and gradient-norm sums stay on the device between log and
    checkpoint steps (no host sync per step) and are averaged over the ranks when folded; every log_every
    steps an entry (means over the interval) goes to `entries` and, on rank 0, to run_dir/log.jsonl.
    `interval` (the sums since the last entry, in floats) is what a checkpoint stores."""

    def __init__(self, run_dir: Path, entries: list[dict], interval: dict, device: torch.device):
        self.path, self.entries, self.interval = Path(run_dir) / LOG, entries, interval
        self.sums = torch.zeros(2, device=device, dtype=torch.float64)

    def add(self, loss: Tensor, grad_norm: Tensor) -> None:
        self.sums += torch.stack([loss.detach(), grad_norm.detach()]).double()
        self.interval["steps"] += 1

    def _fold(self) -> None:
        loss, grad_norm = distributed.mean(self.sums).tolist()  # the global batches' means
        self.interval.update(loss=self.interval["loss"] + loss, grad_norm=self.interval["grad_norm"] + grad_norm)
        self.sums.zero_()

    def step_done(self, cfg: TrainConfig, step: int) -> dict | None:
        """After step `step`: the new entry when one is due, else None; the sums are folded at every log and
        checkpoint step, so `interval` is current when a checkpoint is written."""
        entry = None
        if step % cfg.log_every == 0 or step == cfg.steps:
            self._fold()
            entry = {"step": step, "loss": self.interval["loss"] / self.interval["steps"],
                     "grad_norm": self.interval["grad_norm"] / self.interval["steps"],
                     "lr": learning_rate(cfg, step - 1), "time": time.time()}
            self.entries.append(entry)
            if distributed.world().main:
                with open(self.path, "a") as f:
                    f.write(json.dumps(entry) + "\n")
            self.interval = {"loss": 0.0, "grad_norm": 0.0, "steps": 0}
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            self._fold()
        return entry


def train(cfg: TrainConfig, model_cfg: ModelConfig, pairs, run_dir: str | Path, *, run_info: dict,
          device: torch.device | str = "cpu", init_weights: dict[str, Tensor] | None = None,
          progress: bool = True, stop_after: int | None = None,
          network: torch.nn.Module | None = None) -> TrainResult:
    """Trains (or resumes, when run_dir holds a checkpoint) a velocity network on `pairs` for cfg.steps steps.

    pairs: data.IndependentPairs or data.StoredPairs (shape, dim, degree, batch(size, generator),
    state_dict/load_state_dict, to(device)). run_info: what the run is (stage, data, ...), stored in
    every checkpoint for the stages that load the model. The network is the one model_cfg names for the
    feature shape (models.build_model), or `network` (any nn.Module f(x, t), trained in place). init_weights
    start a fresh run (ignored when resuming). stop_after=k returns after k steps without saving anything,
    as a kill would.
    """
    run_dir, device = Path(run_dir), torch.device(device)
    run_dir.mkdir(parents=True, exist_ok=True)
    world = distributed.world()
    rows = distributed.batch_rows(cfg.batch_size)  # this rank's rows of every global batch
    model_cfg = resolve_model(model_cfg, pairs.shape)
    described = asdict(model_cfg) if network is None else {"module": f"{type(network).__module__}."
                                                                      f"{type(network).__qualname__}"}
    run_info = {**run_info, "dim": pairs.dim, "shape": list(pairs.shape), "degree": pairs.degree,
                "target": cfg.target, "model": described}
    pairs.to(device)

    # the network, its EMA and the optimizer: fresh, or as the last checkpoint left them
    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg, pairs.shape, f"{run_info.get('stage', 'train')}.model") if network is None \
        else network
    if init_weights is not None:
        model.load_state_dict(init_weights)
    model.to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, interval = 0, {"loss": 0.0, "grad_norm": 0.0, "steps": 0}  # sums since the last log entry
    if has_checkpoint(run_dir):
        state = restore(run_dir, model, ema, optimizer)
        step, interval = state["step"], state["log_interval"]
        pairs.load_state_dict(state["data_order"])
    log = read_log(run_dir, up_to_step=step)  # entries past the checkpoint are redone below
    if world.main:
        atomic_write(run_dir / LOG, "".join(json.dumps(e) + "\n" for e in log))
    net = distributed.data_parallel(model, device)  # averages the ranks' gradients in backward
    net = torch.compile(net) if cfg.compile else net
    model.train()

    running = IntervalLog(run_dir, log, interval, device)

    def checkpoint() -> None:
        save_checkpoint(run_dir, step, model, ema, optimizer,
                        {"run": run_info, "data_order": pairs.state_dict(), "log_interval": running.interval},
                        keep=cfg.keep_checkpoints)

    bar = tqdm(total=cfg.steps, initial=step, unit="step", desc=run_info.get("stage", "train"),
               disable=not progress or not world.main, dynamic_ncols=True)
    while step < cfg.steps:
        if stop_after is not None and step >= stop_after:
            break

        # the global batch of control points and times, all drawn from this step's own generator; this rank's rows
        generator = seeded_generator(cfg.seed, step)
        x0, x1, guides = pairs.batch(cfg.batch_size, generator)
        t = sample_times(cfg.time_sampling, cfg.batch_size, generator, a=cfg.u_shape_a, grid_size=cfg.grid_size)
        x0, x1, guides, t = (None if v is None else v[rows].to(device) for v in (x0, x1, guides, t))

        # forward along the path, fused loss, backward
        (xt,) = bk.bezier(x0, x1, t, guides, orders=(0,), backend=cfg.backend)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            pred = net(xt, t)
        loss = bk.bezier_distill_loss(pred.float(), x0, x1, t, guides, target=cfg.target, loss=cfg.loss,
                                      huber_c=cfg.huber_c, backend=cfg.backend)
        grad_norm = optimizer_step(cfg, loss, model, ema, optimizer, step)
        step += 1
        running.add(loss, grad_norm)
        bar.update(1)

        # a log entry every log_every steps (means over the interval), a checkpoint every checkpoint_every
        entry = running.step_done(cfg, step)
        if entry is not None:
            bar.set_postfix(loss=f"{entry['loss']:.4f}")
        if (step % cfg.checkpoint_every == 0 or step == cfg.steps) and world.main:
            checkpoint()
    bar.close()
    distributed.barrier()  # the last checkpoint is on disk before any rank goes on to use it
    return TrainResult(model, ema, step, log)
