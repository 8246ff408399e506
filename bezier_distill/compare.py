"""The comparison runner (`bezier-distill compare`): Bezier distillation against k-RF distillation.

From one CompareStage config, for every seed, the pipeline's own stages build (in OUT/seed-<s>/):
    teacher-<k>rf      the 1-RF teacher (train_teacher) and the k-RF ones (reflow: coupling + training)
    coupling-<k>rf     the k-RF teacher's coupling that k-RF distillation trains on (make_guides, degree 1)
    guides-<method>    a Bezier method's control points (make_guides: fit or multi_teacher)
    student-<method>   the distilled student (distill; endpoint target by default, from the teacher's weights)
    guide-map-<method> a Bezier student's guide map for its N-step sampler (train; see samplers.sample_on_bezier)
then samples every teacher (evaluate.steps and the many-step reference) and every student (each of
evaluate.steps; Bezier students both re-entering their Bezier path and, as the pipeline's plain
Euler sampler does, the line) from the same x0, and measures each sample against fresh target
samples (bezier_distill.metrics; the digits also by a Frechet distance in a classifier's features).

Costs per method: teacher network evaluations spent making the data it depends on (couplings that
trained its teachers, its own coupling or guides), training steps of its teachers, its student and
guide map, and the wall time of all those stages (as measured when each finished; a stage resumed
after a kill counts only the part run after resuming).

Outputs in OUT: config.yaml (the recorded config), results.json (per-seed values, mean and std),
results.md (rendered from results.json by bezier_distill.report) and figures/*.png. Rerunning the
same command resumes: finished stages are skipped, finished seeds' metrics are read back.
"""
from __future__ import annotations

import platform
import time
import zlib
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from safetensors.torch import load_file, save
from tqdm.auto import tqdm

from . import metrics, stages, store
from .checkpoint import load_model
from .config import (CompareStage, DistillStage, GuideMapConfig, GuidesStage, MethodConfig, ReflowStage,
                     TeacherStage)
from .data import StoredPairs, derive_seed, resolve_pair, seeded_generator
from .files import atomic_write, read_json, write_json
from .samplers import evaluations, sample_on_bezier, solve_ode, uniform_times
from .train import train

FORMAT = "bezier-distill-compare"
VERSION = 1
RESULTS_JSON = "results.json"
LEDGER = "ledger.json"
EVALUATION = "evaluation.json"
SAMPLES = "samples.safetensors"


# ---------------------------------------------------------------- the plan of one seed

@dataclass
class Task:
    """A pipeline stage of one seed: its directory name, how to run it, and the stages it needs (itself included)."""

    name: str
    run: Callable[[], object]
    needs: list[str]
    kind: str                     # teacher, coupling, guides, student, guide_map


def slug(method: MethodConfig, index: int) -> str:
    text = "".join(c if c.isalnum() else "-" for c in method.name.lower())
    return f"{index:02d}-" + "-".join(part for part in text.split("-") if part)


def generation_seed(seed: int, name: str) -> int:
    """The seed of a generated dataset: independent across run seeds and datasets, fixed by both."""
    return derive_seed(seed, zlib.crc32(name.encode())) % 2**31


def teacher_of(method: MethodConfig) -> int:
    """k of the teacher whose ODE end is the method's x1 (its student starts from that teacher's weights)."""
    if method.kind == "reflow":
        return method.reflows
    if method.maker == "multi_teacher":
        return method.endpoint or method.teachers[-1]
    return method.teachers[0]


def plan_seed(cfg: CompareStage, seed: int, seed_dir: Path, device: str, progress: bool) -> tuple[list[Task], dict]:
    """Every stage of one seed in running order, and per method the names of its data, student and guide map."""
    tasks: list[Task] = []
    path = {}

    def add(name: str, kind: str, stage: Callable, needs: list[str]) -> None:
        """stage(out_dir, device, progress) runs the task into seed_dir/name."""
        path[name] = str(seed_dir / name)
        tasks.append(Task(name, partial(stage, path[name], device, progress), needs + [name], kind))

    def generate(name: str):
        return replace(cfg.generate, seed=generation_seed(seed, name))

    levels = max(k for m in cfg.methods for k in m.teacher_levels)
    teacher_needs: dict[int, list[str]] = {1: []}
    add("teacher-1rf", "teacher", partial(stages.train_teacher, TeacherStage(
        data=cfg.data, model=cfg.model, train=replace(cfg.teacher, seed=seed))), [])
    for k in range(2, levels + 1):
        teacher_needs[k] = teacher_needs[k - 1] + [f"teacher-{k - 1}rf"]
        reflow = ReflowStage(teacher=path[f"teacher-{k - 1}rf"], coupling=generate(f"teacher-{k}rf"),
                             train=replace(cfg.reflow, seed=seed))
        add(f"teacher-{k}rf", "teacher", partial(stages.reflow, reflow), teacher_needs[k])

    methods = {}
    for index, method in enumerate(cfg.methods):
        needs = sorted({n for k in method.teacher_levels for n in teacher_needs[k] + [f"teacher-{k}rf"]})
        if method.kind == "reflow":
            data = f"coupling-{method.reflows}rf"
            guides = GuidesStage(method="fit", teachers=[path[f"teacher-{method.reflows}rf"]], degree=1,
                                 generate=generate(data))
        else:
            data = f"guides-{slug(method, index)}"
            guides = GuidesStage(method=method.maker, teachers=[path[f"teacher-{k}rf"] for k in method.teachers],
                                 degree=method.degree, guide_times=method.guide_times, generate=generate(data),
                                 endpoint_teacher=path[f"teacher-{method.endpoint}rf"] if method.endpoint else "")
        if data not in path:
            add(data, "coupling" if method.kind == "reflow" else "guides", partial(stages.make_guides, guides), needs)
        student = f"student-{slug(method, index)}"
        distill = DistillStage(pairs=path[data], model=cfg.model, train=replace(cfg.student, seed=seed),
                               init_from=path[f"teacher-{teacher_of(method)}rf"] if cfg.init_students else "")
        add(student, "student", partial(stages.distill, distill), needs + [data])
        guide_map = None
        if method.kind == "bezier" and cfg.student.target == "endpoint":
            guide_map = f"guide-map-{slug(method, index)}"
            add(guide_map, "guide_map", partial(train_guide_map, cfg.guide_map, path[data], seed), needs + [data])
        methods[method.name] = {"data": data, "student": student, "guide_map": guide_map}
    return tasks, {"paths": path, "methods": methods, "levels": levels}


def train_guide_map(cfg: GuideMapConfig, guides_dir: str, seed: int, out_dir: str, device: str, progress: bool):
    """The guide map of samplers.sample_on_bezier, trained by the pipeline's loop on the stored control points:
    inputs the n-1 stacked copies of x0, target the flattened guides, target "endpoint" at t = 0."""
    manifest, tensors = store.load(guides_dir)
    inner = manifest["degree"] - 1
    pairs = StoredPairs(tensors["x0"].repeat(1, inner), tensors["guides"].flatten(1), None, seed)
    stages.record_config(out_dir, "guide_map", cfg)
    run_info = {"stage": "guide_map", "data": manifest["data"], "reflow": None, "pairs": guides_dir}
    return train(replace(cfg.train, seed=seed), cfg.model, pairs, out_dir, run_info=run_info, device=device,
                 progress=progress)


# ---------------------------------------------------------------- running and costing the stages

def stage_cost(task: Task, out_dir: str, result: object) -> dict:
    """Teacher network evaluations spent generating data in this stage, and training steps it ran."""
    evaluations_made, steps = 0, 0
    dataset = Path(out_dir) / "coupling" if task.kind == "teacher" else Path(out_dir)
    if task.kind in ("teacher", "coupling", "guides") and (dataset / store.MANIFEST).is_file():
        manifest = read_json(dataset / store.MANIFEST)
        evaluations_made = manifest["evaluations_per_sample"] * manifest["num_samples"]
    if isinstance(result, stages.TrainResult):
        steps = result.step
    return {"teacher_evaluations": evaluations_made, "train_steps": steps}


def run_stages(tasks: list[Task], paths: dict, ledger_path: Path, progress: bool, desc: str) -> dict:
    """Runs (or resumes) every task in order; returns the ledger {name: wall_s, teacher_evaluations, train_steps}.
    A task's first completed run is what the ledger keeps."""
    ledger = read_json(ledger_path) if ledger_path.is_file() else {}
    for task in tqdm(tasks, desc=desc, unit="stage", disable=not progress, dynamic_ncols=True):
        start = time.perf_counter()
        result = task.run()
        wall = time.perf_counter() - start
        if task.name not in ledger:
            ledger[task.name] = {"wall_s": wall, **stage_cost(task, paths[task.name], result)}
            write_json(ledger_path, ledger)
    return ledger


def method_costs(cfg: CompareStage, tasks: list[Task], ledger: dict, plan: dict) -> dict[str, dict]:
    """Per method: reflows, teacher evaluations, teacher/student/guide-map steps, wall time of every stage it needs."""
    needs = {t.name: t.needs for t in tasks}
    kinds = {t.name: t.kind for t in tasks}
    costs = {}
    for method in cfg.methods:
        names = plan["methods"][method.name]
        required = set(needs[names["student"]]) | set(needs[names["guide_map"]] if names["guide_map"] else [])
        total = lambda key, kind=None: sum(ledger[n][key] for n in required if kind is None or kinds[n] == kind)  # noqa: E731
        costs[method.name] = {"reflows": max(method.teacher_levels) - 1,
                              "teacher_evaluations": total("teacher_evaluations"),
                              "teacher_steps": total("train_steps", "teacher"),
                              "student_steps": total("train_steps", "student"),
                              "guide_map_steps": total("train_steps", "guide_map"),
                              "wall_s": total("wall_s")}
    return costs


# ---------------------------------------------------------------- sampling and measuring

@dataclass
class Row:
    """One sampled model: what it is, how it was sampled, its samples (and path, for multi-step samplers)."""

    model: str                    # "1-RF teacher", a method name, "source", "target"
    kind: str                     # reference, teacher, reflow, bezier
    sampler: str                  # euler, heun ("euler" for a student: line re-entry), bezier, one step, -
    steps: int
    nfe: int                      # network evaluations per sample (a guide map's evaluation counts as one)
    samples: torch.Tensor
    states: torch.Tensor | None = None
    teacher: str | None = None    # the teacher whose map the model's samples should reproduce ("1-RF teacher")
    metrics: dict = field(default_factory=dict)


class Job(NamedTuple):
    """One model to sample: its row's name and kind, its run directory, and the sampler."""

    model: str
    kind: str
    run: str
    sampler: str                  # euler, heun, one step (a student's single step), bezier
    steps: int
    guide_map: str | None = None  # run directory of the guide map (sampler bezier)
    degree: int = 1               # of the student's Bezier paths (sampler bezier)
    teacher: str | None = None    # the teacher whose ODE map it distils or approximates (model name)


def sampling_jobs(cfg: CompareStage, plan: dict) -> list[Job]:
    """Every teacher at evaluate.steps (Euler) and at the reference; every student at evaluate.steps, at
    N >= 2 both with the pipeline's Euler sampler and, for Bezier students, re-entering their path."""
    evaluate, paths, steps = cfg.evaluate, plan["paths"], sorted(set(cfg.evaluate.steps))
    jobs = []
    for k in range(1, plan["levels"] + 1):
        teacher, name = paths[f"teacher-{k}rf"], f"{k}-RF teacher"
        jobs += [Job(name, "teacher", teacher, "euler", n, teacher=name) for n in steps]
        jobs.append(Job(name, "teacher", teacher, evaluate.reference_method, evaluate.reference_steps))
    for method in cfg.methods:
        names = plan["methods"][method.name]
        student, teacher = paths[names["student"]], f"{teacher_of(method)}-RF teacher"
        for n in steps:
            if n == 1:
                jobs.append(Job(method.name, method.kind, student, "one step", 1, teacher=teacher))
                continue
            jobs.append(Job(method.name, method.kind, student, "euler", n, teacher=teacher))
            if names["guide_map"]:
                jobs.append(Job(method.name, method.kind, student, "bezier", n, paths[names["guide_map"]],
                                method.path_degree, teacher))
    return jobs


def draw_rows(cfg: CompareStage, plan: dict, x0: torch.Tensor, target_sample: torch.Tensor, device: str,
              progress: bool) -> list[Row]:
    """Samples of every job from the same x0 [n, D], after the two reference rows (x0 itself, and an
    independent target sample: the metrics' noise floor)."""
    rows = [Row("source", "reference", "-", 0, 0, x0), Row("target", "reference", "-", 0, 0, target_sample)]
    for job in tqdm(sampling_jobs(cfg, plan), desc="sampling", unit="model", disable=not progress,
                    dynamic_ncols=True):
        model, _ = load_model(job.run, device)
        start = x0.to(device)
        if job.sampler == "bezier":
            guide_map, _ = load_model(job.guide_map, device)
            samples, states = sample_on_bezier(model, start, job.steps, guide_map, job.degree, record=True)
            nfe = job.steps + 1
        else:
            method = "heun" if job.sampler == "heun" else "euler"
            samples, states = solve_ode(model, start, uniform_times(job.steps), method, record=job.steps > 1)
            nfe = evaluations(method, job.steps)
        rows.append(Row(job.model, job.kind, job.sampler, job.steps, nfe, samples.cpu(),
                        None if states is None else states.cpu(), job.teacher))
    return rows


def measure_rows(rows: list[Row], reference: torch.Tensor, cfg: CompareStage, seed: int, classifier, progress: bool):
    """Fills each row's metrics against the reference target sample [n, D], and a student's (or a teacher's
    few-step) gap to its teacher: mean over the shared x0 of |x - x_teacher|^2, the teacher sampled with
    the reference steps."""
    evaluate = cfg.evaluate
    directions = metrics.random_directions(evaluate.projections, reference.shape[1],
                                           seeded_generator(evaluate.seed, seed, 2))
    w2 = evaluate.w2_samples
    references = {r.model: r.samples for r in rows
                  if r.kind == "teacher" and (r.sampler, r.steps) == (evaluate.reference_method, evaluate.reference_steps)}
    for row in tqdm(rows, desc="metrics", unit="model", disable=not progress, dynamic_ncols=True):
        x = row.samples
        values = {"energy_distance": metrics.energy_distance(x, reference),
                  "mmd": metrics.mmd_rbf(x, reference),
                  "sliced_w2": metrics.sliced_wasserstein2(x, reference, directions=directions),
                  "w2": metrics.wasserstein2(x[:w2], reference[:w2])}
        if row.teacher is not None:
            values["teacher_gap"] = float((x.double() - references[row.teacher].double()).square().sum(1).mean())
        if row.states is not None:
            values["straightness"] = metrics.straightness(row.states, uniform_times(row.steps))
        if classifier is not None:
            from .classifier import digits_frechet_distance

            values["frechet"] = digits_frechet_distance(x, reference, classifier)
        row.metrics = values


def evaluate_seed(cfg: CompareStage, plan: dict, seed: int, seed_dir: Path, classifier, device: str,
                  progress: bool) -> list[dict]:
    """The metrics of every row of one seed (read back from seed_dir when already measured); writes the
    rows' samples to seed_dir/samples.safetensors for the figures."""
    path = seed_dir / EVALUATION
    if path.is_file():
        return read_json(path)["rows"]
    source, target = resolve_pair(cfg.data)
    n = cfg.evaluate.num_samples
    x0 = source.sample(n, seeded_generator(cfg.evaluate.seed, seed, 0))
    reference = target.sample(n, seeded_generator(cfg.evaluate.seed, seed, 1))
    independent = target.sample(n, seeded_generator(cfg.evaluate.seed, seed, 3))
    rows = draw_rows(cfg, plan, x0, independent, device, progress)
    measure_rows(rows, reference, cfg, seed, classifier, progress)
    records = [{"model": r.model, "kind": r.kind, "sampler": r.sampler, "steps": r.steps, "nfe": r.nfe,
                "metrics": r.metrics} for r in rows]
    tensors = {f"{i}": r.samples.float().contiguous() for i, r in enumerate(rows)}
    tensors["reference"] = reference.float().contiguous()
    atomic_write(seed_dir / SAMPLES, save(tensors))
    write_json(path, {"seed": seed, "rows": records})
    return records


# ---------------------------------------------------------------- aggregation

def summary(values: list[float]) -> dict:
    """mean, std (n - 1 in the denominator; 0 for one value) and the values themselves."""
    tensor = torch.tensor(values, dtype=torch.float64)
    std = float(tensor.std()) if len(values) > 1 else 0.0
    return {"mean": float(tensor.mean()), "std": std, "values": list(values)}


def aggregate(cfg: CompareStage, per_seed: dict[int, list[dict]], costs: dict[int, dict]) -> tuple[list, list]:
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


# ---------------------------------------------------------------- the command

def run_comparison(cfg: CompareStage, out_dir: str | Path, device: str = "cpu", progress: bool = True) -> dict:
    """Runs (or resumes) the whole comparison into out_dir; returns the results written to results.json."""
    device = str(stages.check_stage("compare", cfg, device))
    out_dir = Path(out_dir)
    stages.record_config(out_dir, "compare", cfg)
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, out_dir, device, progress)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: CompareStage, out_dir: Path, device: str, progress: bool) -> dict:
    from . import report

    started = time.perf_counter()
    source, _ = resolve_pair(cfg.data)
    classifier = None
    if cfg.data.target.startswith("digits"):
        from .classifier import digits_classifier

        classifier = digits_classifier(progress=progress)
    per_seed, costs, plans = {}, {}, {}
    for seed in cfg.seeds:
        seed_dir = out_dir / f"seed-{seed}"
        tasks, plan = plan_seed(cfg, seed, seed_dir, device, progress)
        ledger = run_stages(tasks, plan["paths"], seed_dir / LEDGER, progress, desc=f"seed {seed} stages")
        costs[seed] = method_costs(cfg, tasks, ledger, plan)
        per_seed[seed] = evaluate_seed(cfg, plan, seed, seed_dir, classifier, device, progress)
        plans[seed] = plan
    rows, cost_rows = aggregate(cfg, per_seed, costs)
    results = {"format": FORMAT, "version": VERSION, "config": asdict(cfg),
               "data": {"source": cfg.data.source, "target": cfg.data.target, "dim": source.dim},
               "seeds": list(cfg.seeds), "rows": rows, "costs": cost_rows,
               "classifier": None if classifier is None else {"accuracy": classifier.accuracy,
                                                              "settings": asdict(classifier.settings)},
               "environment": {"device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
                               "machine": platform.machine()},
               "wall_s_this_run": time.perf_counter() - started, "figures": {}}
    if cfg.plot:
        results["figures"] = report.write_figures(cfg, plans[cfg.seeds[0]], out_dir, out_dir / f"seed-{cfg.seeds[0]}",
                                                  device)
    write_json(out_dir / RESULTS_JSON, results)
    report.write_markdown(out_dir)
    return results


def load_samples(seed_dir: Path) -> dict[str, torch.Tensor]:
    """The samples of every row of a measured seed ("0", "1", ... in evaluation.json's order; "reference")."""
    return load_file(str(seed_dir / SAMPLES))
