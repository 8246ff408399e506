"""The settings of the few-step baselines a comparison can run beside the distilled students
(bezier_distill.baselines): 2-RF++, Constant Acceleration Flow and MeanFlow."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import need
from .sections import TrainConfig


@dataclass
class RFPPConfig:
    """2-RF++ (Lee, Lin and Fanti 2024): a reflow of the teacher on its coupling, velocity target, U-shaped times,
    pseudo-Huber loss (c = 0.00054 sqrt(D) unless huber_c), started from the teacher's weights."""

    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=300, target="velocity", loss="pseudo_huber", time_sampling="u_shaped", checkpoint_every=300))

    def checks(self):
        yield "train.target", need(self.train.target == "velocity", "2-RF++ fits the velocity: must be 'velocity'",
                                   self.train.target)


@dataclass
class CAFConfig:
    """Constant Acceleration Flow (Park et al. 2024) on the teacher's coupling: first the initial-velocity model
    (target v0 = v0_scale (x1 - x0)), then the acceleration model conditioned on the learnt v0."""

    v0_scale: float = 1.5            # the paper's alpha (h): 1 is the straight line of rectified flow
    velocity: TrainConfig = field(default_factory=lambda: TrainConfig(steps=300, checkpoint_every=300))
    acceleration: TrainConfig = field(default_factory=lambda: TrainConfig(steps=300, checkpoint_every=300))

    def checks(self):
        yield "v0_scale", need(self.v0_scale > 0, "must be > 0", self.v0_scale)


@dataclass
class MeanFlowConfig:
    """MeanFlow (Geng et al. 2025), trained from scratch on independent pairs. Times as in the paper (its t = 1 is
    our source): two logit-normal draws, the later one (in the paper's time) is t, the earlier r; a fraction
    1 - mean_ratio of the batch has r = t (plain flow matching)."""

    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1100, checkpoint_every=1100))
    mean_ratio: float = 0.25         # fraction of samples with r != t
    logit_mean: float = -0.4
    logit_std: float = 1.0
    weight_power: float = 1.0        # adaptive weight 1 / (|delta|^2 + weight_eps)^p
    weight_eps: float = 1e-3

    def checks(self):
        yield "mean_ratio", need(0 <= self.mean_ratio <= 1, "must be in [0, 1]", self.mean_ratio)
        yield "logit_std", need(self.logit_std > 0, "must be > 0", self.logit_std)
        yield "weight_power", need(self.weight_power >= 0, "must be >= 0", self.weight_power)
        yield "weight_eps", need(self.weight_eps > 0, "must be > 0", self.weight_eps)


@dataclass
class BaselinesConfig:
    """The baselines' settings in a comparison (the methods list says which of them run)."""

    rfpp: RFPPConfig = field(default_factory=RFPPConfig)
    caf: CAFConfig = field(default_factory=CAFConfig)
    meanflow: MeanFlowConfig = field(default_factory=MeanFlowConfig)

    def checks(self):
        return iter(())
