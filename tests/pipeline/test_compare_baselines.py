"""The baselines in the comparison runner: their rows, samplers, costs and the new metrics, on a short run of
normal -> 8gaussians whose one-step samples must beat the source."""
from __future__ import annotations

import pytest
import torch
import yaml

from bezier_distill.comparison import report
from bezier_distill.comparison.runner import run_comparison
from bezier_distill.config import ConfigError, load_stage

TINY = """
compare:
  data: {source: normal, target: 8gaussians}
  seeds: [0]
  model: {width: 32, depth: 1, time_features: 16}
  teacher: {steps: 300, batch_size: 128, lr: 0.003, warmup_steps: 5, checkpoint_every: 300, log_every: 50}
  generate: {num_samples: 512, chunk_size: 512, solver: {steps: 8}}
  student: {steps: 20, batch_size: 128, target: endpoint, time_sampling: u_shaped, checkpoint_every: 20, log_every: 10}
  baselines:
    rfpp: {train: {steps: 60, batch_size: 128, lr: 0.003, target: velocity, loss: pseudo_huber,
                   time_sampling: u_shaped, checkpoint_every: 60, log_every: 20}}
    caf:
      velocity: {steps: 60, batch_size: 128, lr: 0.003, checkpoint_every: 60, log_every: 20}
      acceleration: {steps: 60, batch_size: 128, lr: 0.003, checkpoint_every: 60, log_every: 20}
    meanflow: {train: {steps: 200, batch_size: 128, lr: 0.003, warmup_steps: 10, checkpoint_every: 200,
                       log_every: 50}}
  methods:
    - {name: 1-RF, kind: reflow, reflows: 1}
    - {name: 2-RF++, kind: rfpp}
    - {name: CAF, kind: caf}
    - {name: MeanFlow, kind: meanflow}
  evaluate: {num_samples: 300, steps: [1, 2], reference_steps: 8, w2_samples: 100, projections: 16, figure_paths: 3}
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("baselines") / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = load_stage("compare", yaml.safe_load(TINY))
    yield run_comparison(cfg, out, progress=False), out
    torch.set_num_threads(threads)


def row(results: dict, model: str, sampler: str, steps: int) -> dict:
    return next(r for r in results["rows"] if (r["model"], r["sampler"], r["steps"]) == (model, sampler, steps))


def test_each_baseline_is_sampled_by_its_own_sampler_and_beats_the_source(results):
    results, out = results
    source = row(results, "source", "-", 0)["metrics"]
    for model, sampler, nfe in [("2-RF++", "one step", 1), ("CAF", "caf", 2), ("MeanFlow", "meanflow", 1)]:
        one = row(results, model, sampler, 1)
        assert one["nfe"] == nfe and one["kind"] == {"2-RF++": "rfpp", "CAF": "caf", "MeanFlow": "meanflow"}[model]
        assert one["metrics"]["energy_distance"]["mean"] < 0.5 * source["energy_distance"]["mean"], model
        assert one["metrics"]["log_density"]["mean"] > source["log_density"]["mean"] + 1, model
    assert row(results, "CAF", "caf", 2)["nfe"] == 3 and row(results, "MeanFlow", "meanflow", 2)["nfe"] == 2
    assert "teacher_gap" in row(results, "CAF", "caf", 1)["metrics"]
    assert "teacher_gap" not in row(results, "MeanFlow", "meanflow", 1)["metrics"]  # no teacher to reproduce
    assert (out / "seed-0" / "student-02-caf" / "acceleration" / "checkpoint.json").is_file()


def test_the_new_metrics_are_measured_and_reported(results):
    results, out = results
    target = row(results, "target", "-", 0)["metrics"]
    for name in ("precision", "recall", "in_support", "mode_coverage", "mode_tv", "log_density"):
        assert name in target
    assert target["precision"]["mean"] > 0.9 and target["recall"]["mean"] > 0.9 and target["mode_coverage"]["mean"] == 1
    source = row(results, "source", "-", 0)["metrics"]
    assert source["in_support"]["mean"] < 0.5 and source["log_density"]["mean"] < target["log_density"]["mean"] - 3
    markdown = (out / "results.md").read_text()
    assert all(title in markdown for title in ("log p", "modes covered", "recall")) and "| CAF |" in markdown
    assert report.headline_row(results, "CAF", 2)["sampler"] == "caf"


def test_baseline_costs_count_their_teachers_data_and_steps(results):
    results, _ = results
    costs = {c["method"]: c for c in results["costs"]}
    coupling = 512 * 8
    assert costs["2-RF++"]["teacher_evaluations"]["mean"] == coupling == costs["CAF"]["teacher_evaluations"]["mean"]
    assert costs["MeanFlow"]["teacher_evaluations"]["mean"] == 0 and costs["MeanFlow"]["teacher_steps"]["mean"] == 0
    assert costs["2-RF++"]["teacher_steps"]["mean"] == 300 and costs["2-RF++"]["student_steps"]["mean"] == 60
    assert costs["CAF"]["student_steps"]["mean"] == 120 and costs["MeanFlow"]["student_steps"]["mean"] == 200
    assert (costs["CAF"]["degree"], costs["MeanFlow"]["reflows"]) == (2, 0)


def test_bad_baseline_configs_name_the_field():
    with pytest.raises(ConfigError, match=r"'compare.baselines.rfpp.train.target'"):
        load_stage("compare", {"compare": {"baselines": {"rfpp": {"train": {"target": "endpoint"}}}}})
    with pytest.raises(ConfigError, match=r"'compare.methods\[0\].kind'"):
        load_stage("compare", {"compare": {"methods": [{"name": "x", "kind": "consistency"}]}})


def test_the_default_and_demo_methods_include_the_baselines():
    from pathlib import Path

    from bezier_distill.config import default_methods, read_file

    root = Path(__file__).resolve().parents[2]
    kinds = {m.kind for m in default_methods()}
    assert {"rfpp", "caf", "meanflow"} <= kinds
    demo = load_stage("compare", read_file(root / "configs" / "demo.yaml"))
    assert {"rfpp", "caf", "meanflow", "reflow", "bezier"} == {m.kind for m in demo.methods}
    assert len(demo.methods) < len(default_methods())
    pilot = load_stage("compare", read_file(root / "configs" / "results" / "pilot-grid25.yaml"))
    assert pilot.data.target == "grid25" and {m.kind for m in pilot.methods} >= {"rfpp", "caf", "meanflow"}
