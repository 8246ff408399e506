"""The comparison runner on a tiny config: every output file, costs, resumption, and the table read back
from results.json."""
from __future__ import annotations

import json
import re

import pytest
import torch

from bezier_distill import cli, datasets
from bezier_distill.comparison import report
from bezier_distill.config import ConfigError, load_stage

TINY = """
compare:
  data: {source: normal, target: moons}
  seeds: [0, 1]
  model: {width: 32, depth: 1, time_features: 16}
  teacher: {steps: 60, batch_size: 128, lr: 0.003, warmup_steps: 5, checkpoint_every: 60, log_every: 20}
  reflow: {steps: 20, batch_size: 128, checkpoint_every: 20, log_every: 10}
  generate: {num_samples: 256, chunk_size: 256, solver: {steps: 6}}
  student: {steps: 20, batch_size: 128, target: endpoint, time_sampling: u_shaped, checkpoint_every: 20, log_every: 10}
  guide_map:
    model: {width: 32, depth: 1, time_features: 16}
    train: {steps: 20, batch_size: 128, target: endpoint, time_sampling: grid, grid_size: 1, checkpoint_every: 20,
            log_every: 10}
  methods:
    - {name: 1-RF, kind: reflow, reflows: 1}
    - {name: 2-RF, kind: reflow, reflows: 2}
    - {name: Bezier fit n=2 (1-RF), kind: bezier, maker: fit, degree: 2, teachers: [1]}
    - {name: Bezier multi n=3 (1-RF+2-RF), kind: bezier, maker: multi_teacher, teachers: [1, 2],
       guide_times: [0.5, 0.75]}
  evaluate: {num_samples: 150, steps: [1, 2], reference_steps: 6, w2_samples: 100, projections: 16, figure_paths: 3}
"""


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    """The tiny comparison run once through the CLI: (output directory, printed report)."""
    root = tmp_path_factory.mktemp("compare")
    (root / "tiny.yaml").write_text(TINY)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = cli.main(["compare", "--config", str(root / "tiny.yaml"), "--out", str(root / "out"),
                           "--device", "cpu", "--no-progress"])
    torch.set_num_threads(threads)
    assert status == 0
    return root / "out", printed.getvalue()


def stat(values: list[float]) -> tuple[float, float]:
    tensor = torch.tensor(values, dtype=torch.float64)
    return float(tensor.mean()), float(tensor.std())


def test_the_runner_writes_every_output(comparison):
    out, printed = comparison
    for name in ("config.yaml", "results.json", "results.md", "figures/samples.png", "figures/trajectories.png",
                 "figures/losses.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 500, name
    for seed in (0, 1):
        for run in ("teacher-1rf", "teacher-2rf", "coupling-1rf", "coupling-2rf", "student-00-1-rf",
                    "guides-02-bezier-fit-n-2-1-rf", "guide-map-03-bezier-multi-n-3-1-rf-2-rf"):
            assert (out / f"seed-{seed}" / run).is_dir(), run
    # the command prints the verdict and where the files are; the tables stay in results.md
    assert printed.startswith("Verdict on ") and "\n- 1 evaluation: " in printed and "\n- 2 evaluations: " in printed
    assert "| 2-RF | one step | 1 | 1 |" in (out / "results.md").read_text() and "| 2-RF |" not in printed
    assert str(out / "figures" / "samples.png") in printed
    recorded = load_stage("compare", {"compare": json.loads(json.dumps(
        __import__("yaml").safe_load((out / "config.yaml").read_text())["compare"]))})
    assert [m.name for m in recorded.methods][-1] == "Bezier multi n=3 (1-RF+2-RF)"


def test_results_hold_every_model_with_per_seed_values(comparison):
    results = json.loads((comparison[0] / "results.json").read_text())
    keys = [(r["model"], r["sampler"], r["steps"]) for r in results["rows"]]
    assert keys[:2] == [("source", "-", 0), ("target", "-", 0)]
    for k in (1, 2):
        assert {(f"{k}-RF teacher", "euler", s) for s in (1, 2, 6)} <= set(keys)
    assert ("2-RF", "one step", 1) in keys and ("2-RF", "euler", 2) in keys and ("2-RF", "bezier", 2) not in keys
    assert {("Bezier fit n=2 (1-RF)", s, 2) for s in ("euler", "bezier")} <= set(keys)
    nfe = {key: r["nfe"] for key, r in zip(keys, results["rows"])}
    assert nfe[("Bezier fit n=2 (1-RF)", "bezier", 2)] == 3 and nfe[("Bezier fit n=2 (1-RF)", "euler", 2)] == 2
    for row in results["rows"]:
        assert set(row["metrics"]) >= {"energy_distance", "mmd", "sliced_w2", "w2"}
        assert ("straightness" in row["metrics"]) == (row["steps"] >= 2)
        assert ("teacher_gap" in row["metrics"]) == (row["kind"] != "reference" and row["steps"] <= 2)
        for value in row["metrics"].values():
            assert len(value["values"]) == 2
            assert (value["mean"], value["std"]) == pytest.approx(stat(value["values"]), rel=1e-12, abs=1e-15)
    source = next(r for r in results["rows"] if r["model"] == "source")["metrics"]["energy_distance"]["mean"]
    target = next(r for r in results["rows"] if r["model"] == "target")["metrics"]["energy_distance"]["mean"]
    assert abs(target) < 0.2 * source  # the noise floor is far below the untransported source


def test_gap_to_teacher_is_measured_on_the_shared_source_points(comparison):
    """The stored samples of seed 0 reproduce the recorded gap: the 2-RF student against the 2-RF teacher's
    6-step samples from the same x0, and a Bezier student on rf1 against the 1-RF teacher."""
    from bezier_distill.comparison.evaluate import load_samples

    seed_dir = comparison[0] / "seed-0"
    rows = json.loads((seed_dir / "evaluation.json").read_text())["rows"]
    samples = load_samples(seed_dir)
    index = {(r["model"], r["sampler"], r["steps"]): i for i, r in enumerate(rows)}
    for student, teacher in [(("2-RF", "one step", 1), "2-RF teacher"),
                             (("Bezier fit n=2 (1-RF)", "bezier", 2), "1-RF teacher")]:
        x, ref = samples[str(index[student])].double(), samples[str(index[(teacher, "euler", 6)])].double()
        assert rows[index[student]]["metrics"]["teacher_gap"] == pytest.approx(
            float((x - ref).square().sum(1).mean()), rel=1e-6)


def test_costs_count_the_data_and_training_each_method_needs(comparison):
    results = json.loads((comparison[0] / "results.json").read_text())
    costs = {c["method"]: c for c in results["costs"]}
    pairs = 256 * 6  # one coupling or fitted guide set: 256 pairs, a 6-step Euler ODE each
    assert costs["1-RF"]["teacher_evaluations"]["values"] == [pairs, pairs]
    assert costs["2-RF"]["teacher_evaluations"]["values"] == [2 * pairs] * 2  # rf1's coupling for rf2, rf2's own
    assert costs["Bezier fit n=2 (1-RF)"]["teacher_evaluations"]["values"] == [pairs] * 2
    # multi-teacher: rf1 to t = 0.5 (3 steps), rf2 to t = 0.75 (5 steps), rf2 to 1 (6), + rf1's coupling for rf2
    assert costs["Bezier multi n=3 (1-RF+2-RF)"]["teacher_evaluations"]["values"] == [256 * (3 + 5 + 6) + pairs] * 2
    assert [costs[m]["reflows"] for m in costs] == [0, 1, 0, 1]
    assert costs["2-RF"]["teacher_steps"]["mean"] == 60 + 20 and costs["1-RF"]["guide_map_steps"]["mean"] == 0
    assert costs["Bezier fit n=2 (1-RF)"]["guide_map_steps"]["mean"] == 20
    assert all(c["wall_s"]["mean"] > 0 for c in costs.values())


def parse_table(markdown: str, heading: str) -> list[list[str]]:
    section = markdown.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def test_the_markdown_table_is_read_back_from_the_json(comparison):
    out = comparison[0]
    results = json.loads((out / "results.json").read_text())
    markdown = (out / "results.md").read_text()
    rows = parse_table(markdown, "Every sampled model")
    assert len(rows) == len(results["rows"])
    columns = [m for m in report.METRICS if m in results["rows"][-1]["metrics"]]
    for cells, row in zip(rows, results["rows"]):
        assert cells[0] == row["model"] and int(cells[2]) == row["steps"] and int(cells[3]) == row["nfe"]
        for cell, metric in zip(cells[4:], columns):
            if metric not in row["metrics"]:
                assert cell == "–"
                continue
            mean, std = (float(part) for part in re.fullmatch(r"(\S+) ± (\S+)", cell).groups())
            assert mean == pytest.approx(row["metrics"][metric]["mean"], rel=5e-3, abs=1e-12)
            assert std == pytest.approx(row["metrics"][metric]["std"], rel=5e-2, abs=1e-12)
    # the file is rendered from results.json: a changed number there is what the table shows
    results["rows"][3]["metrics"]["w2"]["mean"] = 123456.0
    (out / "results.json").write_text(json.dumps(results))
    report.write_markdown(out)
    assert parse_table((out / "results.md").read_text(), "Every sampled model")[3][4 + columns.index("w2")] \
        .startswith("1.23e+05 ± ")


def test_a_rerun_resumes_without_training_again(comparison, capsys):
    out = comparison[0]
    ledger = (out / "seed-0" / "ledger.json").read_text()
    checkpoint = (out / "seed-1" / "student-00-1-rf" / "checkpoint.json").read_text()
    assert cli.main(["compare", "--config", str(out.parent / "tiny.yaml"), "--out", str(out), "--device", "cpu",
                     "--no-progress", "--set", "compare.plot=false"]) == 2  # a changed config is refused
    assert "config field 'compare.plot'" in capsys.readouterr().err
    assert cli.main(["compare", "--config", str(out.parent / "tiny.yaml"), "--out", str(out), "--device", "cpu",
                     "--no-progress"]) == 0
    assert (out / "seed-0" / "ledger.json").read_text() == ledger
    assert (out / "seed-1" / "student-00-1-rf" / "checkpoint.json").read_text() == checkpoint


def test_bad_comparison_configs_are_one_line_errors_naming_the_field():
    with pytest.raises(ConfigError, match=r"'compare.methods\[0\].teachers': maker 'fit' takes exactly one"):
        load_stage("compare", {"compare": {"methods": [{"name": "x", "kind": "bezier", "teachers": [1, 2]}]}})
    with pytest.raises(ConfigError, match=r"'compare.guide_map.train.time_sampling': must be 'grid'"):
        load_stage("compare", {"compare": {"guide_map": {"train": {"time_sampling": "uniform"}}}})
    with pytest.raises(ConfigError, match=r"'compare.methods': needs methods with distinct names"):
        load_stage("compare", {"compare": {"methods": [{"name": "a"}, {"name": "a"}]}})
    with pytest.raises(ConfigError, match=r"'compare.model.factory': is a plain f\(x, t\), but the methods of kind "
                                          r"caf and meanflow need networks with more inputs"):
        load_stage("compare", {"compare": {"model": {"factory": "my.nets:build"}}})
    factory_students = {"model": {"factory": "my.nets:build"}, "methods": [{"name": "1-RF"}, {"name": "2-RF++",
                                                                                              "kind": "rfpp"}]}
    assert load_stage("compare", {"compare": factory_students}).model.factory == "my.nets:build"


def test_a_digits_comparison_reports_the_classifier_frechet_distance(tmp_path, monkeypatch):
    from bezier_distill.comparison.runner import run_comparison

    monkeypatch.setenv("BEZIER_DISTILL_CACHE", str(tmp_path / "cache"))
    tiny = __import__("yaml").safe_load(TINY)["compare"]
    tiny.update(data={"source": "normal", "target": "digits"}, seeds=[0],
                methods=[{"name": "1-RF", "kind": "reflow"}, {"name": "Bezier", "kind": "bezier", "degree": 2}],
                evaluate={**tiny["evaluate"], "reference_steps": 3})
    results = run_comparison(load_stage("compare", {"compare": tiny}), tmp_path / "out", progress=False)
    assert results["classifier"]["accuracy"] > 0.9 and results["data"]["dim"] == 64
    assert all("frechet" in row["metrics"] for row in results["rows"])
    frechet = {row["model"]: row["metrics"]["frechet"]["mean"] for row in results["rows"] if row["steps"] <= 1}
    assert frechet["target"] < 0.2 * frechet["source"]
    precision = {row["model"]: row["metrics"]["precision"]["mean"] for row in results["rows"] if row["steps"] == 0}
    assert precision["target"] > 0.5 > precision["source"]  # k-NN precision in the classifier's features
    assert set(results["figures"]) == {"samples", "losses"}  # no 2-D trajectories for images
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert "FD (classifier)" in markdown and "a digits classifier (8x8)" in markdown
    assert f"{100 * results['classifier']['accuracy']:.1f}%" in markdown and results["classifier"]["data"] == "digits"


@pytest.mark.skipif(datasets.fashion_mnist_problem() is not None,
                    reason=f"Fashion-MNIST not installed: {datasets.FASHION_INSTALL}")
def test_a_fashion_comparison_measures_in_the_fashion_classifiers_features(tmp_path, monkeypatch):
    """A class subset at 7x7: the classifier of the ten classes at 7x7 (trained here, ~3 s); images [n, 1, 7, 7]
    through every stage, the Bezier student's guide map and N-step sampler included."""
    from bezier_distill.comparison.runner import run_comparison

    monkeypatch.setenv("BEZIER_DISTILL_CACHE", str(tmp_path / "cache"))
    tiny = __import__("yaml").safe_load(TINY)["compare"]
    tiny.update(data={"source": "normal", "target": "fashion:0-1@7"}, seeds=[0], plot=False,
                methods=[{"name": "1-RF", "kind": "reflow"}, {"name": "Bezier", "kind": "bezier", "degree": 2}],
                evaluate={**tiny["evaluate"], "reference_steps": 3})
    results = run_comparison(load_stage("compare", {"compare": tiny}), tmp_path / "out", progress=False)
    classifier = results["classifier"]
    assert (classifier["data"], classifier["size"], classifier["settings"]["test_fraction"]) == ("fashion", 7, None)
    assert classifier["accuracy"] > 0.7 and results["data"]["dim"] == 49
    frechet = {row["model"]: row["metrics"]["frechet"]["mean"] for row in results["rows"] if row["steps"] <= 1}
    assert frechet["target"] < 0.2 * frechet["source"]
    precision = {row["model"]: row["metrics"]["precision"]["mean"] for row in results["rows"] if row["steps"] == 0}
    assert precision["target"] > 0.5 > precision["source"]
    assert any(row["sampler"] == "bezier" and "straightness" in row["metrics"] for row in results["rows"])
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert f"a Fashion-MNIST classifier (7x7) with held-out accuracy {100 * classifier['accuracy']:.1f}%" in markdown


def test_the_results_page_keeps_its_text_and_renders_every_run_from_copied_json(comparison, tmp_path):
    out = comparison[0]
    page = tmp_path / "results.md"
    page.write_text(f"# Results\n\nThe reading, by hand.\n\n{report.PAGE_MARKER}\n\nstale tables\n")
    report.write_page(page, [out])
    text = page.read_text()
    assert text.startswith("# Results\n\nThe reading, by hand.\n\n" + report.PAGE_MARKER) and "stale" not in text
    copy = tmp_path / "results" / f"{out.name}.json"
    assert json.loads(copy.read_text()) == json.loads((out / "results.json").read_text())
    assert (tmp_path / "results" / f"{out.name}-trajectories.png").stat().st_size > 0
    assert f"![{out.name}-trajectories](results/{out.name}-trajectories.png)" in text
    results = json.loads(copy.read_text())
    rows = parse_table(text, "Students at one and two steps")[:len(results["costs"])]
    assert [cells[0] for cells in rows] == [cost["method"] for cost in results["costs"]]
    for cells, cost in zip(rows, results["costs"]):
        row = report.headline_row(results, cost["method"], 1)
        assert float(cells[3].split(" ± ")[0]) == pytest.approx(row["metrics"]["energy_distance"]["mean"], rel=5e-3)
    # the verdict first, then the tables and figures, the costs last; each run's verdict lines as its report's
    order = [text.index(heading) for heading in ("## Verdicts at a glance", "## Verdicts\n", "## Tables and figures",
                                                 "## Training costs")]
    assert order == sorted(order) and text.index("![") > order[1]
    verdict = text[order[1]:order[2]]
    assert all(line in verdict for line in report.verdict_lines(results))
    glance = parse_table(text, "Verdicts at a glance")
    found = report.verdicts(results)
    assert glance[0][0] == out.name and glance[0][2].startswith(
        f"beats {sum(v.outcome == 'beats' for v in found if v.nfe == 1)}, ")
    report.write_page(page, [out])
    assert page.read_text() == text
