"""The comparison runner (`bezier-distill compare`): Bezier distillation against k-RF distillation.

The package: layout (directory names), plan (the typed stages of one seed), evaluate (sampling,
metrics, aggregation), figures, report (markdown from results.json), and this runner.

From one CompareConfig config, for every seed, the pipeline's own stages build (in OUT/seed-<s>/):
    teacher-<k>rf      the 1-RF teacher (train_teacher) and the k-RF ones (reflow: coupling + training)
    coupling-<k>rf     the k-RF teacher's coupling that k-RF distillation trains on (make_guides, degree 1)
    guides-<method>    a Bezier method's control points (make_guides: fit or multi_teacher)
    student-<method>   the distilled student (distill; endpoint target by default, from the teacher's weights)
    guide-map-<method> a Bezier student's guide map for its N-step sampler (train; see samplers.sample_on_bezier)
then samples every teacher (evaluate.steps and the many-step reference) and every student (each of
evaluate.steps; Bezier students both re-entering their Bezier path and, as the pipeline's plain
Euler sampler does, the line) from the same x0, and measures each sample against fresh target
samples (bezier_distill.evaluation.metrics; image targets of a labelled set, the digits, Fashion-MNIST and
MNIST, also by a Frechet distance in the features of that set's classifier at the target's resolution).

Costs per method: teacher network evaluations spent making the data it depends on (couplings that
trained its teachers, its own coupling or guides), training steps of its teachers, its student and
guide map, and the wall time of all those stages (as measured when each finished; a stage resumed
after a kill counts only the part run after resuming).

Outputs in OUT: config.yaml (the recorded config), results.json (per-seed values, mean and std),
results.md (rendered from results.json by comparison.report) and figures/*.png. Rerunning the
same command resumes: finished stages are skipped, finished seeds' metrics are read back.
"""
from __future__ import annotations

import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import stages, store
from ..config import CompareConfig
from ..data import resolve_pair
from ..evaluation.classifier import classifier_for
from ..files import read_json, write_json
from . import layout
from .evaluate import aggregate, evaluate_seed
from .plan import Product, SeedPlan, Stage, plan_seed
from .report import write_markdown

FORMAT = "bezier-distill-compare"
VERSION = 1


# ---------------------------------------------------------------- running and costing the stages

def stage_cost(stage: Stage, out_dir: str, result: object) -> dict:
    """Teacher network evaluations spent generating data in this stage, and training steps it ran."""
    evaluations_made, steps = 0, 0
    dataset = Path(out_dir) / stages.COUPLING_DIR if stage.product is Product.TEACHER else Path(out_dir)
    if stage.product in (Product.TEACHER, Product.COUPLING, Product.GUIDES) and (dataset / store.MANIFEST).is_file():
        manifest = read_json(dataset / store.MANIFEST)
        evaluations_made = manifest["evaluations_per_sample"] * manifest["num_samples"]
    if isinstance(result, stages.TrainResult):
        steps = result.step
    return {"teacher_evaluations": evaluations_made, "train_steps": steps}


def run_stages(planned: list[Stage], paths: dict, ledger_path: Path, progress: bool, desc: str) -> dict:
    """Runs (or resumes) every stage in order; returns the ledger {name: wall_s, teacher_evaluations, train_steps}.
    A stage's first completed run is what the ledger keeps."""
    ledger = read_json(ledger_path) if ledger_path.is_file() else {}
    for stage in tqdm(planned, desc=desc, unit="stage", disable=not progress, dynamic_ncols=True):
        start = time.perf_counter()
        result = stage.run()
        wall = time.perf_counter() - start
        if stage.name not in ledger:
            ledger[stage.name] = {"wall_s": wall, **stage_cost(stage, paths[stage.name], result)}
            write_json(ledger_path, ledger)
    return ledger


def _total(ledger: dict, names: set[str], products: dict[str, Product], key: str,
           product: Product | None = None) -> float:
    """The sum of ledger[name][key] over names (those making `product` only, when given)."""
    return sum(ledger[n][key] for n in names if product is None or products[n] is product)


def method_costs(cfg: CompareConfig, plan: SeedPlan, ledger: dict) -> dict[str, dict]:
    """Per method: reflows, teacher evaluations, teacher/student/guide-map steps, wall time of every stage it needs."""
    needs = {s.name: s.needs for s in plan.stages}
    products = {s.name: s.product for s in plan.stages}
    costs = {}
    for method in cfg.methods:
        runs = plan.methods[method.name]
        required = set(needs[runs.student]) | set(needs[runs.guide_map] if runs.guide_map else [])

        costs[method.name] = {"reflows": max(method.teacher_levels, default=1) - 1,
                              "teacher_evaluations": _total(ledger, required, products, "teacher_evaluations"),
                              "teacher_steps": _total(ledger, required, products, "train_steps", Product.TEACHER),
                              "student_steps": _total(ledger, required, products, "train_steps", Product.STUDENT),
                              "guide_map_steps": _total(ledger, required, products, "train_steps", Product.GUIDE_MAP),
                              "wall_s": _total(ledger, required, products, "wall_s")}
    return costs


# ---------------------------------------------------------------- the command

def run_comparison(cfg: CompareConfig, out_dir: str | Path, device: str = "cpu", progress: bool = True) -> dict:
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


def _run(cfg: CompareConfig, out_dir: Path, device: str, progress: bool) -> dict:
    started = time.perf_counter()
    source, _ = resolve_pair(cfg.data)
    classifier = classifier_for(cfg.data.target, progress)  # digits, Fashion-MNIST, MNIST targets; else None
    per_seed, costs, plans = {}, {}, {}
    for seed in cfg.seeds:
        seed_dir = layout.seed_dir(out_dir, seed)
        plan = plan_seed(cfg, seed, seed_dir, device, progress)
        ledger = run_stages(plan.stages, plan.paths, seed_dir / layout.LEDGER, progress, desc=f"seed {seed} stages")
        costs[seed] = method_costs(cfg, plan, ledger)
        per_seed[seed] = evaluate_seed(cfg, plan, seed, seed_dir, classifier, device, progress)
        plans[seed] = plan
    rows, cost_rows = aggregate(cfg, per_seed, costs)
    results = {"format": FORMAT, "version": VERSION, "config": asdict(cfg),
               "data": {"source": cfg.data.source, "target": cfg.data.target, "dim": source.dim},
               "seeds": list(cfg.seeds), "rows": rows, "costs": cost_rows,
               "classifier": None if classifier is None else classifier.describe(),
               "environment": {"device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
                               "machine": platform.machine()},
               "wall_s_this_run": time.perf_counter() - started, "figures": {}}
    if cfg.plot:
        from .figures import write_figures  # matplotlib: only when figures are drawn

        first = cfg.seeds[0]
        results["figures"] = write_figures(cfg, plans[first], out_dir, layout.seed_dir(out_dir, first), device)
    write_json(out_dir / layout.RESULTS_JSON, results)
    write_markdown(out_dir)
    return results
