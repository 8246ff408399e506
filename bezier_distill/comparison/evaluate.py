"""Sampling and measuring every model of one seed, and the aggregation of the seeds' metrics.

Every teacher is sampled at evaluate.steps (Euler) and at the many-step reference; every student
at evaluate.steps (Bezier students at N >= 2 both re-entering their Bezier path and, as the
pipeline's plain Euler sampler does, the line; CAF and MeanFlow by their own samplers), all from
the same x0, and each sample is measured against fresh target samples (bezier_distill.evaluation:
metrics; k-NN precision and recall, in the data space or, for the images of a labelled set (digits,
Fashion-MNIST, MNIST), in its classifier's features; for targets of known structure the mean
log-density, support and mode coverage; those images also by a Frechet distance in the classifier's
features).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import load_file, save
from tqdm.auto import tqdm

from ..baselines.caf import load_caf, sample_caf
from ..baselines.meanflow import load_meanflow, sample_meanflow
from ..checkpoint import load_model
from ..config import CompareConfig
from ..data import resolve_pair, seeded_generator
from ..evaluation import metrics
from ..evaluation.classifier import frechet_in_features
from ..evaluation.density import structure_metrics, structure_of
from ..evaluation.precision_recall import precision_recall
from ..files import atomic_write, read_json, write_json
from ..samplers import evaluations, sample_on_bezier, solve_ode, uniform_times
from . import layout
from .plan import Family, Sampler, SeedPlan, teacher_of


@dataclass
class Row:
    """One sampled model: what it is, how it was sampled, its samples (and path, for multi-step samplers)."""

    model: str                    # "1-RF teacher", a method name, "source", "target"
    family: Family
    sampler: Sampler
    steps: int
    nfe: int                      # network evaluations per sample (a guide map's evaluation counts as one)
    samples: torch.Tensor
    states: torch.Tensor | None = None
    teacher: str | None = None    # the teacher whose map the model's samples should reproduce ("1-RF teacher")
    metrics: dict = field(default_factory=dict)


class Job(NamedTuple):
    """One model to sample: its row's name and family, its run directory, and the sampler."""

    model: str
    family: Family
    run: str
    sampler: Sampler
    steps: int
    guide_map: str | None = None  # run directory of the guide map (Sampler.BEZIER)
    degree: int = 1               # of the student's Bezier paths (Sampler.BEZIER)
    teacher: str | None = None    # the teacher whose ODE map it distils or approximates (model name)


def sampling_jobs(cfg: CompareConfig, plan: SeedPlan) -> list[Job]:
    """Every teacher at evaluate.steps (Euler) and at the reference; every student at evaluate.steps, at
    N >= 2 both with the pipeline's Euler sampler and, for Bezier students, re-entering their path."""
    evaluate, paths, steps = cfg.evaluate, plan.paths, sorted(set(cfg.evaluate.steps))
    jobs = []
    for k in range(1, plan.levels + 1):
        teacher, name = paths[layout.teacher_run(k)], layout.teacher_model(k)
        jobs += [Job(name, Family.TEACHER, teacher, Sampler.EULER, n, teacher=name) for n in steps]
        jobs.append(Job(name, Family.TEACHER, teacher, Sampler(evaluate.reference_method), evaluate.reference_steps))
    for method in cfg.methods:
        runs, family, k = plan.methods[method.name], Family(method.kind), teacher_of(method)
        student, teacher = paths[runs.student], None if k is None else layout.teacher_model(k)
        for n in steps:
            if family in (Family.CAF, Family.MEANFLOW):
                jobs.append(Job(method.name, family, student, Sampler(family.value), n, teacher=teacher))
                continue
            if n == 1:
                jobs.append(Job(method.name, family, student, Sampler.ONE_STEP, 1, teacher=teacher))
                continue
            jobs.append(Job(method.name, family, student, Sampler.EULER, n, teacher=teacher))
            if runs.guide_map:
                jobs.append(Job(method.name, family, student, Sampler.BEZIER, n, paths[runs.guide_map],
                                method.path_degree, teacher))
    return jobs


def draw_rows(cfg: CompareConfig, plan: SeedPlan, x0: torch.Tensor, target_sample: torch.Tensor, device: str,
              progress: bool) -> list[Row]:
    """Samples of every job from the same x0 [n, D], after the two reference rows (x0 itself, and an
    independent target sample: the metrics' noise floor)."""
    rows = [Row("source", Family.REFERENCE, Sampler.NONE, 0, 0, x0),
            Row("target", Family.REFERENCE, Sampler.NONE, 0, 0, target_sample)]
    for job in tqdm(sampling_jobs(cfg, plan), desc="sampling", unit="model", disable=not progress,
                    dynamic_ncols=True):
        start = x0.to(device)
        if job.sampler is Sampler.CAF:  # the velocity model once, then one acceleration evaluation per step
            samples, states = sample_caf(load_caf(job.run, device), start, job.steps, record=job.steps > 1)
            nfe = job.steps + 1
        elif job.sampler is Sampler.MEANFLOW:
            samples, states = sample_meanflow(load_meanflow(job.run, device), start, job.steps, record=job.steps > 1)
            nfe = job.steps
        elif job.sampler is Sampler.BEZIER:
            model, _ = load_model(job.run, device)
            guide_map, _ = load_model(job.guide_map, device)
            samples, states = sample_on_bezier(model, start, job.steps, guide_map, job.degree, record=True)
            nfe = job.steps + 1
        else:
            model, _ = load_model(job.run, device)
            method = "heun" if job.sampler is Sampler.HEUN else "euler"
            samples, states = solve_ode(model, start, uniform_times(job.steps), method, record=job.steps > 1)
            nfe = evaluations(method, job.steps)
        rows.append(Row(job.model, job.family, job.sampler, job.steps, nfe, samples.cpu(),
                        None if states is None else states.cpu(), job.teacher))
    return rows


def measure_rows(rows: list[Row], reference: torch.Tensor, cfg: CompareConfig, seed: int, classifier, progress: bool):
    """Fills each row's metrics against the reference target sample [n, D], and a student's (or a teacher's
    few-step) gap to its teacher: mean over the shared x0 of |x - x_teacher|^2, the teacher sampled with
    the reference steps. Precision and recall (k = 3) in the classifier's features when there is one, else
    in the data space; log-density, support and mode coverage when the target's structure is known. Image
samples [n, C, H, W] (and states [n, K+1, C, H, W]) are measured as the vectors [n, D] of their pixels."""
    evaluate = cfg.evaluate
    structure = structure_of(resolve_pair(cfg.data)[1])
    reference = reference.flatten(1)
    features = (lambda x: x) if classifier is None else classifier.features
    reference_features = features(reference)
    directions = metrics.random_directions(evaluate.projections, reference.shape[1],
                                           seeded_generator(evaluate.seed, seed, 2))
    w2 = evaluate.w2_samples
    reference_sampler = (Sampler(evaluate.reference_method), evaluate.reference_steps)
    references = {r.model: r.samples.flatten(1) for r in rows
                  if r.family is Family.TEACHER and (r.sampler, r.steps) == reference_sampler}
    for row in tqdm(rows, desc="metrics", unit="model", disable=not progress, dynamic_ncols=True):
        x = row.samples.flatten(1)
        values = {"energy_distance": metrics.energy_distance(x, reference),
                  "mmd": metrics.mmd_rbf(x, reference),
                  "sliced_w2": metrics.sliced_wasserstein2(x, reference, directions=directions),
                  "w2": metrics.wasserstein2(x[:w2], reference[:w2])}
        values["precision"], values["recall"] = precision_recall(reference_features, features(x))
        if structure is not None:
            values.update(structure_metrics(x, structure))
        if row.teacher is not None:
            values["teacher_gap"] = float((x.double() - references[row.teacher].double()).square().sum(1).mean())
        if row.states is not None:
            values["straightness"] = metrics.straightness(row.states.flatten(2), uniform_times(row.steps))
        if classifier is not None:
            values["frechet"] = frechet_in_features(x, reference, classifier)
        row.metrics = values


def evaluate_seed(cfg: CompareConfig, plan: SeedPlan, seed: int, seed_dir: Path, classifier, device: str,
                  progress: bool) -> list[dict]:
    """The metrics of every row of one seed (read back from seed_dir when already measured); writes the
    rows' samples to seed_dir/samples.safetensors for the figures."""
    path = seed_dir / layout.EVALUATION
    if path.is_file():
        return read_json(path)["rows"]
    source, target = resolve_pair(cfg.data)
    n = cfg.evaluate.num_samples
    x0 = source.sample(n, seeded_generator(cfg.evaluate.seed, seed, 0))
    reference = target.sample(n, seeded_generator(cfg.evaluate.seed, seed, 1))
    independent = target.sample(n, seeded_generator(cfg.evaluate.seed, seed, 3))
    rows = draw_rows(cfg, plan, x0, independent, device, progress)
    measure_rows(rows, reference, cfg, seed, classifier, progress)
    records = [{"model": r.model, "kind": r.family.value, "sampler": r.sampler.value, "steps": r.steps, "nfe": r.nfe,
                "metrics": r.metrics} for r in rows]
    tensors = {f"{i}": r.samples.float().contiguous() for i, r in enumerate(rows)}
    tensors["reference"] = reference.float().contiguous()
    atomic_write(seed_dir / layout.SAMPLES, save(tensors))
    write_json(path, {"seed": seed, "rows": records})
    return records


def load_samples(seed_dir: Path) -> dict[str, torch.Tensor]:
    """The samples of every row of a measured seed ("0", "1", ... in evaluation.json's order; "reference")."""
    return load_file(str(seed_dir / layout.SAMPLES))


# ---------------------------------------------------------------- aggregation over seeds

def summary(values: list[float]) -> dict:
    """mean, std (n - 1 in the denominator; 0 for one value) and the values themselves."""
    tensor = torch.tensor(values, dtype=torch.float64)
    std = float(tensor.std()) if len(values) > 1 else 0.0
    return {"mean": float(tensor.mean()), "std": std, "values": list(values)}


def aggregate(cfg: CompareConfig, per_seed: dict[int, list[dict]], costs: dict[int, dict]) -> tuple[list, list]:
    """Rows and costs over seeds: each metric's mean, std and per-seed values, in the first seed's row order."""
    first = per_seed[cfg.seeds[0]]
    rows = []
    for record in first:
        key = (record["model"], record["sampler"], record["steps"])
        matches = [next(r for r in per_seed[s] if (r["model"], r["sampler"], r["steps"]) == key) for s in cfg.seeds]
        rows.append({**{k: record[k] for k in ("model", "kind", "sampler", "steps", "nfe")},
                     "metrics": {name: summary([m["metrics"][name] for m in matches]) for name in record["metrics"]}})
    cost_rows = []
    for method in cfg.methods:
        entries = [costs[s][method.name] for s in cfg.seeds]
        cost_rows.append({"method": method.name, "kind": method.kind, "degree": method.path_degree,
                          "reflows": entries[0]["reflows"],
                          **{key: summary([e[key] for e in entries]) for key in entries[0] if key != "reflows"}})
    return rows, cost_rows
