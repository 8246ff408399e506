"""The `bezier-distill` console script end to end on a tiny config, and one-line errors for bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from bezier_distill import cli, store
from bezier_distill.checkpoint import load_checkpoint
from bezier_distill.train import read_log

SCRIPT = Path(sys.executable).with_name("bezier-distill")  # installed by pyproject's [project.scripts]

TINY = """
teacher:
  data: {source: normal, target: moons}
  model: {width: 32, depth: 1, time_features: 16}
  train: {steps: 30, batch_size: 128, lr: 0.003, warmup_steps: 5, checkpoint_every: 10, log_every: 10}
reflow:
  coupling: {num_samples: 300, chunk_size: 128, solver: {steps: 4}}
  train: {steps: 10, batch_size: 128, checkpoint_every: 5, log_every: 5}
guides:
  method: fit
  degree: 2
  generate: {num_samples: 300, chunk_size: 128, solver: {steps: 4}}
distill:
  model: {width: 32, depth: 1, time_features: 16}
  train: {steps: 20, batch_size: 128, target: endpoint, time_sampling: u_shaped, checkpoint_every: 10, log_every: 5}
sample:
  num_samples: 200
  solver: {steps: 2}
"""


def bezier_distill(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(SCRIPT), *args, "--device", "cpu", "--no-progress"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_console_script_runs_every_stage(tmp_path):
    assert SCRIPT.is_file(), f"{SCRIPT} is missing: reinstall the package (pip install -e .)"
    (tmp_path / "tiny.yaml").write_text(TINY)
    steps = [
        ("train-teacher", "--config", "tiny.yaml", "--out", "rf1"),
        ("reflow", "--config", "tiny.yaml", "--teacher", "rf1", "--out", "rf2"),
        ("make-guides", "--config", "tiny.yaml", "--teacher", "rf1", "--out", "guides", "--set", "guides.degree=3"),
        ("distill", "--config", "tiny.yaml", "--pairs", "guides", "--out", "student"),
        ("sample", "--config", "tiny.yaml", "--model", "student", "--out", "samples"),
    ]
    for args in steps:
        done = bezier_distill(*args, cwd=tmp_path)
        assert done.returncode == 0, f"{args[0]} failed:\n{done.stderr}"
    assert load_checkpoint(tmp_path / "rf1")[0]["step"] == 30
    assert load_checkpoint(tmp_path / "rf2")[0]["run"]["reflow"] == 2
    manifest, tensors = store.load(tmp_path / "guides")
    assert manifest["degree"] == 3 and tensors["guides"].shape == (300, 2, 2)
    recorded = yaml.safe_load((tmp_path / "guides" / "config.yaml").read_text())["guides"]
    assert recorded["teachers"] == ["rf1"] and recorded["degree"] == 3  # the flag and --set, recorded
    assert load_checkpoint(tmp_path / "student")[0]["step"] == 20
    summary = json.loads((tmp_path / "samples" / "summary.json").read_text())
    assert summary["evaluations_per_sample"] == 2 and summary["energy_distance"] > 0
    assert "energy_distance" in done.stdout


def test_multi_teacher_guides_from_the_command_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "tiny.yaml").write_text(TINY)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train-teacher", "--config", "tiny.yaml", "--out", "rf1", "--device", "cpu", "--no-progress",
                     "--set", "teacher.train.steps=5"]) == 0
    assert cli.main(["make-guides", "--config", "tiny.yaml", "--teacher", "rf1", "--teacher", "rf1", "--out", "gm",
                     "--device", "cpu", "--no-progress", "--set", "guides.method=multi_teacher",
                     "--set", "guides.guide_times=[0.3, 0.6]"]) == 0
    assert "300 guides paths of degree 3" in capsys.readouterr().out
    assert store.load(tmp_path / "gm")[1]["guides"].shape == (300, 2, 2)


def teacher_dir(tmp_path: Path) -> Path:
    """A finished tiny run directory made without training (an empty config gets past the checks)."""
    run = tmp_path / "rf1"
    cli.main(["train-teacher", "--out", str(run), "--device", "cpu", "--no-progress",
              "--set", "teacher.train.steps=1", "--set", "teacher.model.width=8", "--set", "teacher.model.depth=0"])
    return run


# (command and flags, config file text or None, the start of the expected one-line message)
BAD_INPUT = [
    (["train-teacher"], "teacher: {train: {lrr: 0.1}}", "config field 'teacher.train.lrr': unknown field"),
    (["train-teacher"], "teacher: {train: {steps: ten}}",
     "config field 'teacher.train.steps': expected an integer, got 'ten'"),
    (["train-teacher"], "teacher: {train: {lr: -1}}", "config field 'teacher.train.lr': must be > 0, got -1.0"),
    (["train-teacher"], "teacher: {train: {target: noise}}",
     "config field 'teacher.train.target': expected one of 'velocity', 'endpoint'"),
    (["train-teacher"], "teacher: {train: {target: endpoint}}",
     "config field 'teacher.train.target': a teacher fits the velocity"),
    (["train-teacher"], "teacher: {data: {target: spirals}}",
     "config field 'teacher.data.target': unknown distribution 'spirals'"),
    (["train-teacher"], "teacher: {data: {target: digits}, model: {width: 0}}",
     "config field 'teacher.model.width': must be >= 1"),
    (["train-teacher"], "teacher: {data: {source: moons, target: digits}}",
     "config field 'teacher.data.target': 'digits' has 64 dimensions"),
    (["train-teacher"], "teachr: {}", "config field 'teachr': unknown section"),
    (["train-teacher"], "teacher: [1, 2]", "config field 'teacher': expected a mapping"),
    (["train-teacher"], "teacher: {train: {steps: 3}\n", "config file 'bad.yaml' is not valid YAML"),
    (["train-teacher", "--config", "missing.yaml"], None, "config file 'missing.yaml' does not exist"),
    (["train-teacher", "--set", "teacher.train.steps"], None, "--set 'teacher.train.steps': expected FIELD=VALUE"),
    (["reflow", "--teacher", "nowhere"], None, "config field 'reflow.teacher': 'nowhere' is not a training run"),
    (["distill", "--pairs", "nowhere"], None, "config field 'distill.pairs': 'nowhere' is not a dataset"),
    (["make-guides"], "guides: {generate: {solver: {steps: 0}}}",
     "config field 'guides.generate.solver.steps': must be >= 1, got 0"),
    (["make-guides", "--teacher", "{run}", "--set", "guides.degree=3", "--set", "guides.fit_points=3"], None,
     "config field 'guides.fit_points': needs degree + 1 = 4"),
    (["make-guides", "--teacher", "{run}", "--set", "guides.method=multi_teacher"], None,
     "config field 'guides.guide_times': needs one time per teacher (1)"),
    (["distill", "--pairs", "{run}"], None, "config field 'distill.pairs': '{run}' is not a dataset"),
    (["sample", "--model", "{run}", "--set", "sample.solver.method=rk4"], None,
     "config field 'sample.solver.method': expected one of 'euler', 'heun'"),
    (["train-teacher", "--set", "teacher.train.backend=cuda"], None,
     "config field 'teacher.train.backend': backend 'cuda' cannot run on cpu"),
]


@pytest.mark.parametrize("args, text, expected", BAD_INPUT, ids=[f"{i}-{e[0][0]}" for i, e in enumerate(BAD_INPUT)])
def test_bad_input_is_one_line_naming_the_field(args, text, expected, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = str(teacher_dir(tmp_path)) if any("{run}" in a for a in args) else ""
    capsys.readouterr()
    args = [a.replace("{run}", run) for a in args]
    if text is not None:
        (tmp_path / "bad.yaml").write_text(text)
        args += ["--config", "bad.yaml"]
    assert cli.main([*args, "--out", "out", "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"bezier-distill {args[0]}: error: {expected.replace('{run}', run)}"), err


def test_a_changed_config_for_an_existing_run_names_the_field(tmp_path, capsys):
    run = teacher_dir(tmp_path)
    capsys.readouterr()
    assert cli.main(["train-teacher", "--out", str(run), "--device", "cpu", "--set", "teacher.data.target=rings"]) == 2
    assert "config field 'teacher.data.target':" in capsys.readouterr().err


def test_the_console_script_prints_no_traceback_for_user_errors(tmp_path):
    (tmp_path / "bad.yaml").write_text("distill: {train: {batch_size: 0}}")
    done = bezier_distill("distill", "--config", "bad.yaml", "--out", "x", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "bezier-distill distill: error: config field 'distill.train.batch_size': must be >= 1, got 0"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
def test_device_cuda_without_a_gpu_is_a_one_line_error(tmp_path, capsys):
    assert cli.main(["train-teacher", "--out", str(tmp_path / "x"), "--device", "cuda"]) == 2
    assert capsys.readouterr().err.startswith("bezier-distill train-teacher: error: --device cuda: no CUDA device")


def _every_stage_and_an_exact_resume(tmp_path, capsys, device: str) -> None:
    (tmp_path / "tiny.yaml").write_text(TINY)

    def run(*args: str) -> None:
        status = cli.main([*args, "--config", str(tmp_path / "tiny.yaml"), "--device", device, "--no-progress"])
        assert status == 0, capsys.readouterr().err

    def out(name: str) -> str:
        return str(tmp_path / name)

    run("train-teacher", "--out", out("rf1"))
    run("make-guides", "--teacher", out("rf1"), "--out", out("guides"))
    run("distill", "--pairs", out("guides"), "--out", out("student"))
    run("sample", "--model", out("student"), "--out", out("samples"))
    summary = json.loads((tmp_path / "samples" / "summary.json").read_text())
    assert summary["evaluations_per_sample"] == 2 and summary["energy_distance"] > 0
    # 30 steps, then on to 60 (resumed: the first 30 steps' log entries, times included, stay), against
    # 60 at once: the same weights, bit for bit
    first = read_log(tmp_path / "rf1")
    run("train-teacher", "--out", out("rf1"), "--set", "teacher.train.steps=60")
    assert read_log(tmp_path / "rf1")[:len(first)] == first and len(read_log(tmp_path / "rf1")) > len(first)
    run("train-teacher", "--out", out("straight"), "--set", "teacher.train.steps=60")
    (resumed_state, resumed), (_, straight) = load_checkpoint(tmp_path / "rf1"), load_checkpoint(tmp_path / "straight")
    assert resumed_state["step"] == 60 and resumed.keys() == straight.keys()
    for name in resumed:
        assert torch.equal(resumed[name], straight[name]), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (the CPU runs every stage in "
                    "test_console_script_runs_every_stage and resumes in tests/pipeline/test_faults.py)")
def test_every_stage_on_cuda_and_an_exact_resume_there(tmp_path, capsys):
    _every_stage_and_an_exact_resume(tmp_path, capsys, "cuda")
