"""The training loop the baselines share, and loading their networks back.

Like bezier_distill.train (AdamW, linear warmup, gradient clipping, EMA, log.jsonl, checkpoints in
bezier_distill.checkpoint's format, exact resumption: every random draw of step s comes from a
generator seeded by (seed, s)), but the loss is the method's own: loss(net, step, generator, rows) ->
scalar, where the loss draws the step's global batch and keeps its `rows`.

Under torchrun (bezier_distill.distributed), as in train: every rank draws the same global batch
and trains on its own contiguous rows of it inside DistributedDataParallel (`net`; the network
itself is `net.module` there, for what needs no gradient, such as MeanFlow's JVP), so the updates
are those of one process (to rounding); the logged means are averaged over the ranks, rank 0
alone writes the log and checkpoints. The checkpoint's "run" entry says which baseline the network
is and how to build it (stage, shape, model), so `load_baseline` rebuilds it for sampling.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .. import distributed
from ..checkpoint import has_checkpoint, model_weights, restore, save_checkpoint
from ..config import TrainConfig
from ..data import seeded_generator
from ..files import atomic_write
from ..train import LOG, IntervalLog, TrainResult, optimizer_step, read_log

Loss = Callable[[nn.Module, int, torch.Generator, slice], Tensor]


def unwrapped(net: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel wrapper (or net itself)."""
    return net.module if isinstance(net, torch.nn.parallel.DistributedDataParallel) else net


def fit(cfg: TrainConfig, model: nn.Module, loss: Loss, run_dir: str | Path, *, run_info: dict, pairs=None,
        progress: bool = True, stop_after: int | None = None) -> TrainResult:
    """Trains (or resumes from run_dir's checkpoint) `model` for cfg.steps steps of loss(net, step, generator, rows).

    pairs: the data.StoredPairs the loss draws from (its order is checkpointed), or None. stop_after=k returns
    after k steps without saving, as a kill would. Returns the final and EMA networks.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    world = distributed.world()
    rows = distributed.batch_rows(cfg.batch_size)  # this rank's rows of every global batch
    device = next(model.parameters()).device
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, interval = 0, {"loss": 0.0, "grad_norm": 0.0, "steps": 0}
    if has_checkpoint(run_dir):
        state = restore(run_dir, model, ema, optimizer)
        step, interval = state["step"], state["log_interval"]
        if pairs is not None:
            pairs.load_state_dict(state["data_order"])
    log = read_log(run_dir, up_to_step=step)
    if world.main:
        atomic_write(run_dir / LOG, "".join(json.dumps(e) + "\n" for e in log))
    net = distributed.data_parallel(model, device)  # averages the ranks' gradients in backward
    model.train()
    bar = tqdm(total=cfg.steps, initial=step, unit="step", desc=run_info["stage"],
               disable=not progress or not world.main, dynamic_ncols=True)
    running = IntervalLog(run_dir, log, interval, device)
    while step < cfg.steps and (stop_after is None or step < stop_after):
        value = loss(net, step, seeded_generator(cfg.seed, step), rows)
        grad_norm = optimizer_step(cfg, value, model, ema, optimizer, step)
        step += 1
        running.add(value, grad_norm)
        bar.update(1)
        running.step_done(cfg, step)
        if (step % cfg.checkpoint_every == 0 or step == cfg.steps) and world.main:
            save_checkpoint(run_dir, step, model, ema, optimizer,
                            {"run": run_info, "log_interval": running.interval,
                             "data_order": None if pairs is None else pairs.state_dict()},
                            keep=cfg.keep_checkpoints)
    bar.close()
    distributed.barrier()  # the last checkpoint is on disk before any rank goes on to use it
    return TrainResult(model, ema, step, log)


def load_baseline(run_dir: str | Path, build: Callable[[dict], nn.Module], device: torch.device | str = "cpu",
                  ema: bool = True) -> tuple[nn.Module, dict]:
    """The network of a baseline run (EMA weights by default), rebuilt by build(run info), in eval mode."""
    weights, state = model_weights(run_dir, ema)
    model = build(state["run"])
    model.load_state_dict(weights)
    return model.to(device).eval().requires_grad_(False), state
