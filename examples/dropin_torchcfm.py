"""Bezier paths inside torchcfm: its README training loop (8 Gaussians to two moons), two lines changed.

The loop and model are torchcfm's (torchcfm.models.MLP, sample_location_and_conditional_flow);
samples come from integrating the learned field with torchdiffeq. The swap: ConditionalFlowMatcher
becomes a BezierConditionalFlowMatcher with the same sigma, whose guide provider bends every path
(toy2d.bend_sideways).
Runs on a CPU in seconds:  python examples/dropin_torchcfm.py [--steps 600]
"""
import argparse

import torch
from torchcfm.models import MLP
from torchdiffeq import odeint
from toy2d import bend_sideways, eight_gaussians, report, two_moons

from bezier_kernels.integrations import (
    BezierConditionalFlowMatcher,  # CHANGED: was  from torchcfm import ConditionalFlowMatcher
)


def main(steps: int = 600, batch_size: int = 256, sigma: float = 0.1) -> float:
    torch.manual_seed(0)
    model = MLP(dim=2, time_varying=True)
    optimizer = torch.optim.Adam(model.parameters())
    # CHANGED: was  FM = ConditionalFlowMatcher(sigma=sigma)
    FM = BezierConditionalFlowMatcher(sigma=sigma, guide_provider=bend_sideways)
    for k in range(steps):
        optimizer.zero_grad()
        x0, x1 = eight_gaussians(batch_size), two_moons(batch_size)
        t, xt, ut = FM.sample_location_and_conditional_flow(x0, x1)
        vt = model(torch.cat([xt, t[:, None]], dim=-1))
        loss = torch.mean((vt - ut) ** 2)
        loss.backward()
        optimizer.step()
        if k % max(1, steps // 5) == 0:
            print(f"step {k + 1:5d}  loss {loss.item():.3f}")

    def field(t, x):
        return model(torch.cat([x, t.expand(x.shape[0], 1)], dim=-1))

    x_init = eight_gaussians(2000)
    with torch.no_grad():
        samples = odeint(field, x_init, torch.linspace(0, 1, 2), method="rk4", options={"step_size": 0.05})[-1]
    return report(samples, x_init, two_moons(2000))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    main(parser.parse_args().steps)
