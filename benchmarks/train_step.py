"""One student step of Bezier distillation, timed with each provider of the path and the loss.

The step: x_t = B(t) on the teacher's Bezier path (degree 3 by default), pred = student([x_t, t]),
loss = bezier_distill_loss(pred, x0, x1, t, guides) (velocity target, mse), backward, AdamW step.
Providers:
    eager             reference path and loss, eager student
    compiled          torch.compile(fullgraph=True, dynamic=False) of the student forward plus the
                      reference path and loss (AOTAutograd compiles the backward too)
    <backend>         the fused ops of a backend, eager student
    <backend>+compile the same step as "compiled" with the fused ops (custom ops inside the graph)
The optimizer step is the same eager AdamW in every provider. The data is random with the
shapes of the two training problems (2-D toy data; 64-dim digits); timing does not depend on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .cases import InputSet, make_input_sets, provider_functions
from .report import add_speedups
from .timing import first_call_ms, past, time_call


@dataclass(frozen=True)
class TrainCase:
    """A student MLP (layers hidden layers of width hidden, SiLU) on features-dim data."""

    name: str
    features: int
    hidden: int
    layers: int
    batch: int
    degree: int = 3


def student(case: TrainCase) -> nn.Module:
    widths = [case.features + 1] + [case.hidden] * case.layers
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.SiLU()]
    return nn.Sequential(*layers, nn.Linear(case.hidden, case.features))


def make_step(case: TrainCase, provider: str, device: torch.device, seed: int = 0) -> tuple[Callable, nn.Module]:
    """step(inputs) for one provider, with its own student (same initial weights) and optimizer."""
    torch.manual_seed(seed)
    model = student(case).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    path, loss_fn = provider_functions(provider.removesuffix("+compile"))

    def compute_loss(x0, x1, guides, t):
        (xt,) = path(x0, x1, t, guides, orders=(0,))
        pred = model(torch.cat([xt, t.unsqueeze(1)], dim=1))
        return loss_fn(pred, x0, x1, t, guides)

    if provider == "compiled" or provider.endswith("+compile"):
        torch._dynamo.reset()
        compute_loss = torch.compile(compute_loss, fullgraph=True, dynamic=False)

    def step(s: InputSet) -> None:
        loss = compute_loss(s.x0, s.x1, s.guides, s.t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, model


def train_providers(fused: list[str], compile_: bool) -> list[str]:
    providers = ["eager"] + (["compiled"] if compile_ else [])
    for name in fused:
        providers += [name] + ([f"{name}+compile"] if compile_ else [])
    return providers


def run_case(case: TrainCase, providers: list[str], device: torch.device, repeats: int, warmup: int,
             rotation_bytes: int, log: Callable[[str], None], deadline: float | None = None) -> list[dict]:
    """Times every provider's step on case; rows for report.TRAIN_FIELDS. At least 5 warm-up steps:
    the compiled step with the fused ops still took 20-50x its steady time on calls 2-4. Once
    deadline passes (timing.past), no new provider starts."""
    if past(deadline):
        return []
    sets = make_input_sets(case.batch, case.features, case.degree, torch.float32, device, rotation_bytes, max_sets=4)
    rows = []
    for provider in providers:
        if past(deadline):
            break
        row = {"case": case.name, "provider": provider, "batch": case.batch, "features": case.features,
               "hidden": case.hidden, "layers": case.layers, "degree": case.degree, "repeats": repeats,
               "median_ms": None, "min_ms": None, "max_ms": None, "first_call_ms": None, "vs_eager": None,
               "vs_compiled": None, "error": ""}
        try:
            step, model = make_step(case, provider, device)
            row["parameters"] = sum(p.numel() for p in model.parameters())
            row["first_call_ms"] = first_call_ms(step, sets[0], device)
            timing = time_call(step, sets, repeats=repeats, warmup=max(warmup, 5), device=device)
            row.update(median_ms=timing.median, min_ms=timing.min, max_ms=timing.max)
        except Exception as error:  # a failing provider is reported, the others still run
            row["parameters"] = row.get("parameters", 0)
            row["error"] = f"{type(error).__name__}: {error}".splitlines()[0]
        log(f"train {case.name} {provider}: "
            + (f"{row['median_ms']:.2f} ms" if not row["error"] else row["error"]))
        rows.append(row)
    add_speedups(rows, ("case",))
    return rows

