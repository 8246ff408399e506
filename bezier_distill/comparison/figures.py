"""The comparison's figures, drawn from one seed's runs: sample grids, trajectories (2-D data), losses.

    write_figures(cfg, plan, out_dir, seed_dir, device)  figures/samples.png, figures/trajectories.png (2-D),
                                                          figures/losses.png; {name: path relative to out_dir}

The trajectories panel loads the teachers and students and solves their ODEs again; everything else
reads what the runner wrote (evaluation.json, samples.safetensors, each run's log.jsonl).
"""
from __future__ import annotations

from pathlib import Path

import torch

import bezier_kernels as bk

from .. import store
from ..baselines.caf import ACCELERATION, VELOCITY
from ..checkpoint import load_model
from ..config import CompareConfig
from ..data import resolve_pair
from ..evaluation.plots import plot_losses, plot_sample_grid, plot_trajectories
from ..files import read_json
from ..samplers import sample_on_bezier, solve_ode, uniform_times
from ..train import read_log
from . import layout
from .evaluate import load_samples
from .plan import Family, SeedPlan, teacher_of

SAMPLER_TITLES = {"euler": "Euler", "heun": "Heun"}
LOSS_GROUPS = {"reflow": "k-RF students", "bezier": "Bezier students"}  # every other kind: "baselines"


def _column(row: dict) -> tuple[str, int]:
    """The sample grid's column of a row: a model's own N-step sampler shares the Euler column."""
    own = row["sampler"] in ("one step", "caf", "meanflow")
    return ("euler" if own else row["sampler"], row["steps"])


def _sample_grid(cfg: CompareConfig, seed_dir: Path, path: Path, image_shape) -> None:
    rows = read_json(seed_dir / layout.EVALUATION)["rows"]
    samples = load_samples(seed_dir)
    columns: list[tuple[str, int]] = []
    models: list[str] = []
    for row in rows:
        if row["kind"] == Family.REFERENCE:
            continue
        column = _column(row)
        if column not in columns:
            columns.append(column)
        if row["model"] not in models:
            models.append(row["model"])
    columns.sort(key=lambda column: (column[1], column[0] == "bezier"))
    grid = {name: [None] * len(columns) for name in models}
    for i, row in enumerate(rows):
        if row["kind"] != Family.REFERENCE:
            column = _column(row)
            grid[row["model"]][columns.index(column)] = samples[str(i)]
    own = " (CAF, MeanFlow: own)" if any(row["sampler"] in ("caf", "meanflow") for row in rows) else ""
    titles = ["1 step" if steps == 1 else f"{steps} steps, Bezier re-entry" if sampler == "bezier"
              else f"{steps} {SAMPLER_TITLES[sampler]} steps" + (own if sampler == "euler" else "")
              for sampler, steps in columns]
    plot_sample_grid(list(grid.items()), titles, samples["reference"], path, image_shape)


def _trajectory_panels(cfg: CompareConfig, plan: SeedPlan, device: str) -> list[dict]:
    panels = []
    paths = cfg.evaluate.figure_paths
    for method in cfg.methods:
        runs = plan.methods[method.name]
        if method.kind in ("caf", "meanflow"):  # no velocity network on a stored path to draw
            continue
        _, tensors = store.load(plan.paths[runs.data])
        x0, x1 = tensors["x0"][:paths], tensors["x1"][:paths]
        guides = tensors["guides"][:paths] if "guides" in tensors else None
        polygon = torch.cat([x0[:, None], *([] if guides is None else [guides]), x1[:, None]], dim=1)
        grid = torch.linspace(0, 1, 41)
        curve = torch.stack([bk.bezier(x0, x1, t.expand(x0.shape[0]), guides, orders=(0,))[0] for t in grid], dim=1)
        teacher, _ = load_model(plan.paths[layout.teacher_run(teacher_of(method))], device)
        _, teacher_states = solve_ode(teacher, x0.to(device), uniform_times(cfg.evaluate.reference_steps),
                                      cfg.evaluate.reference_method, record=True)
        student, _ = load_model(plan.paths[runs.student], device)
        if runs.guide_map:
            guide_map, _ = load_model(plan.paths[runs.guide_map], device)
            _, student_states = sample_on_bezier(student, x0.to(device), 2, guide_map, method.path_degree, record=True)
        else:
            _, student_states = solve_ode(student, x0.to(device), uniform_times(2), record=True)
        panels.append({"title": method.name, "teacher": teacher_states.cpu(), "polygon": polygon, "curve": curve,
                       "student": student_states.cpu()})
    return panels


def _loss_groups(cfg: CompareConfig, plan: SeedPlan) -> dict:
    groups = {"teachers": {}, "k-RF students": {}, "Bezier students": {}, "baselines": {}, "guide maps": {}}
    for k in range(1, plan.levels + 1):
        groups["teachers"][f"{k}-RF"] = read_log(plan.paths[layout.teacher_run(k)])
    for method in cfg.methods:
        runs = plan.methods[method.name]
        group = groups[LOSS_GROUPS.get(method.kind, "baselines")]
        if method.kind == "caf":  # its two networks, each in a run of its own
            for part in (VELOCITY, ACCELERATION):
                group[f"{method.name} {part}"] = read_log(Path(plan.paths[runs.student]) / part)
        else:
            group[method.name] = read_log(plan.paths[runs.student])
        if runs.guide_map:
            groups["guide maps"][method.name] = read_log(plan.paths[runs.guide_map])
    return {title: {name: [(e["step"], e["loss"]) for e in log] for name, log in runs.items()}
            for title, runs in groups.items() if runs}


def write_figures(cfg: CompareConfig, plan: SeedPlan, out_dir: Path, seed_dir: Path, device: str) -> dict[str, str]:
    """The figures of one seed's runs into OUT/figures; returns {name: path relative to OUT}."""
    figures = Path(out_dir) / layout.FIGURES
    figures.mkdir(parents=True, exist_ok=True)
    _, target = resolve_pair(cfg.data)
    written = {"samples": figures / "samples.png"}
    _sample_grid(cfg, seed_dir, written["samples"], target.image_shape)
    if target.dim == 2:
        written["trajectories"] = figures / "trajectories.png"
        plot_trajectories(_trajectory_panels(cfg, plan, device), load_samples(seed_dir)["reference"],
                          written["trajectories"])
    written["losses"] = figures / "losses.png"
    plot_losses(_loss_groups(cfg, plan), written["losses"])
    return {name: str(path.relative_to(out_dir)) for name, path in written.items()}
