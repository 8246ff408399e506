"""2-RF++ (Lee, Lin and Fanti 2024, "Improving the Training of Rectified Flows"; code sangyun884/rfpp).

One reflow of the 1-RF teacher with the paper's training recipe: the network starts from the 1-RF
teacher's weights and fits the velocity x1 - x0 of the straight lines of the teacher's coupling
(x0, ODE end of x0), with the U-shaped time density p(t) ~ exp(a t) + exp(a (1 - t)) (a = 4, more
weight near both ends, where one- and two-step sampling queries the network) and the pseudo-Huber
loss sqrt(|r|^2 + c^2) - c, c = 0.00054 sqrt(D). Training is the pipeline's own loop on the fused
loss (bk.bezier_distill_loss, loss "pseudo_huber"), so this module only holds the recipe; the
network is a plain velocity network sampled by Euler steps (one step: x0 + v(x0, 0)).
"""
from __future__ import annotations

from dataclasses import replace

from ..config import DistillConfig, ModelConfig
from ..config.baselines import RFPPConfig


def rfpp_distill_config(cfg: RFPPConfig, coupling: str, model: ModelConfig, seed: int, teacher: str) -> DistillConfig:
    """The distill stage of 2-RF++: on the coupling dataset directory, from the teacher run's weights."""
    return DistillConfig(pairs=coupling, model=model, train=replace(cfg.train, seed=seed), init_from=teacher)
