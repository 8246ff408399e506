"""Every stage on tiny sizes: teacher quality, reflow, both guide makers, students, exact resume."""
from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import load_file

from bezier_distill import stages, store
from bezier_distill.checkpoint import load_checkpoint, load_model
from bezier_distill.config import (
    ConfigError,
    DataConfig,
    DistillConfig,
    GuidesConfig,
    ModelConfig,
    ReflowConfig,
    SampleConfig,
    SolverConfig,
    TeacherConfig,
    load_stage,
    read_file,
)
from bezier_distill.guides import fit_bezier
from bezier_distill.samplers import ode_grid, sample, solve_ode
from bezier_distill.train import read_log

from pipeline_helpers import TINY_MODEL, tiny_generate, tiny_train


@pytest.fixture(scope="module")
def fit_guides(teacher_run, tmp_path_factory) -> str:
    """Degree-3 guides fitted to the teacher's trajectories, with the trajectories stored."""
    out = tmp_path_factory.mktemp("guides") / "fit3"
    cfg = GuidesConfig(method="fit", teachers=[teacher_run], degree=3, save_trajectory=True, generate=tiny_generate())
    stages.make_guides(cfg, out, progress=False)
    return str(out)


def test_teacher_samples_are_closer_to_the_target_than_the_source(teacher_run, tmp_path):
    """A 1-RF teacher (normal -> moons) moves samples to the target: energy distance well below the source's."""
    summary = stages.sample(SampleConfig(model=teacher_run, num_samples=1000, solver=SolverConfig(steps=20)),
                            tmp_path, progress=False)
    assert summary["energy_distance"] < 0.2 * summary["source_energy_distance"]
    assert {p.name for p in tmp_path.iterdir()} == {"config.yaml", "samples.safetensors", "summary.json", "samples.png"}
    saved = load_file(str(tmp_path / "samples.safetensors"))
    assert saved["x0"].shape == saved["x1"].shape == (1000, 2)


def test_reflow_trains_on_the_coupling_of_its_teacher(teacher_run, tmp_path):
    cfg = ReflowConfig(teacher=teacher_run, coupling=tiny_generate(), train=tiny_train(steps=40))
    result = stages.reflow(cfg, tmp_path, progress=False)
    manifest, tensors = store.load(tmp_path / "coupling")
    assert manifest["kind"] == "coupling" and manifest["degree"] == 1 and "guides" not in tensors
    assert manifest["teachers"][0]["sha256"] == load_checkpoint(teacher_run)[0]["tensors"]["sha256"]
    assert manifest["evaluations_per_sample"] == 8
    teacher, _ = load_model(teacher_run)
    torch.testing.assert_close(tensors["x1"][:50], sample(teacher, tensors["x0"][:50], 8), rtol=1e-5, atol=1e-5)
    state, _ = load_checkpoint(tmp_path)
    assert state["run"]["reflow"] == 2 and state["step"] == 40 and result.step == 40


def test_fit_guides_are_the_least_squares_fit_of_the_stored_trajectories(fit_guides):
    manifest, tensors = store.load(fit_guides)
    assert manifest["kind"] == "guides" and manifest["degree"] == 3 and manifest["num_samples"] == 600
    assert tensors["guides"].shape == (600, 2, 2) and tensors["trajectory"].shape == (600, 9, 2)
    trajectory = tensors["trajectory"]
    assert torch.equal(trajectory[:, 0], tensors["x0"]) and torch.equal(trajectory[:, -1], tensors["x1"])
    times = torch.tensor(manifest["trajectory_times"], dtype=torch.float64)
    refit = fit_bezier(trajectory.double(), times, 3, tensors["x0"].double(), tensors["x1"].double())
    torch.testing.assert_close(tensors["guides"].double(), refit, rtol=1e-5, atol=1e-5)


def test_multi_teacher_guides_are_teacher_states(teacher_run, tmp_path):
    cfg = GuidesConfig(method="multi_teacher", teachers=[teacher_run, teacher_run], guide_times=[0.25, 0.6],
                      generate=tiny_generate(num_samples=300, solver=SolverConfig("heun", 4)))
    manifest = stages.make_guides(cfg, tmp_path, progress=False)
    _, tensors = store.load(tmp_path)
    assert manifest["degree"] == 3 and tensors["guides"].shape == (300, 2, 2)
    teacher, _ = load_model(teacher_run)
    x0 = tensors["x0"][:40]
    for j, s in enumerate([0.25, 0.6]):
        state, _ = solve_ode(teacher, x0, ode_grid([s], 4), "heun")
        torch.testing.assert_close(tensors["guides"][:40, j], state, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tensors["x1"][:40], sample(teacher, x0, 4, "heun"), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("target, time_sampling, loss", [
    ("velocity", "uniform", "mse"),
    ("endpoint", "u_shaped", "pseudo_huber"),
    ("endpoint", "grid", "mse"),
])
def test_student_loss_falls(fit_guides, tmp_path, target, time_sampling, loss):
    cfg = DistillConfig(pairs=fit_guides, model=TINY_MODEL,
                       train=tiny_train(steps=80, target=target, time_sampling=time_sampling, loss=loss, grid_size=2))
    result = stages.distill(cfg, tmp_path, progress=False)
    losses = [entry["loss"] for entry in result.log]
    assert len(losses) == 8 and losses[-1] < 0.3 * losses[0]


def test_one_step_bezier_student_beats_its_source(fit_guides, tmp_path):
    """An endpoint student on fitted guides, sampled in ONE step, lands near the target."""
    cfg = DistillConfig(pairs=fit_guides, model=TINY_MODEL, train=tiny_train(steps=200, target="endpoint"))
    stages.distill(cfg, tmp_path / "student", progress=False)
    summary = stages.sample(SampleConfig(model=str(tmp_path / "student"), num_samples=600,
                                        solver=SolverConfig(steps=1), plot=False), tmp_path / "samples", progress=False)
    assert summary["evaluations_per_sample"] == 1
    assert summary["energy_distance"] < 0.3 * summary["source_energy_distance"]


def test_krf_distillation_baseline_trains_on_a_coupling(teacher_run, tmp_path):
    reflow_cfg = ReflowConfig(teacher=teacher_run, coupling=tiny_generate(), train=tiny_train(steps=1))
    stages.reflow(reflow_cfg, tmp_path / "rf2", progress=False)
    cfg = DistillConfig(pairs=str(tmp_path / "rf2" / "coupling"), model=TINY_MODEL, init_from=teacher_run,
                       train=tiny_train(steps=40, target="endpoint"))
    result = stages.distill(cfg, tmp_path / "student", progress=False)
    state, _ = load_checkpoint(tmp_path / "student")
    assert state["run"]["paths"]["kind"] == "coupling" and state["run"]["degree"] == 1
    assert result.log[-1]["loss"] < result.log[0]["loss"]


def test_init_from_needs_the_same_architecture(teacher_run, fit_guides, tmp_path):
    cfg = DistillConfig(pairs=fit_guides, init_from=teacher_run, model=ModelConfig(width=32, depth=2, time_features=32))
    with pytest.raises(ConfigError, match="config field 'distill.init_from': .* dim-2 .*'width': 64"):
        stages.distill(cfg, tmp_path, progress=False)
    assert not (tmp_path / "config.yaml").exists()  # a rejected config is not recorded


def checkpoint_tensors(run_dir) -> tuple[dict, dict]:
    state, tensors = load_checkpoint(run_dir)
    return {k: v for k, v in state.items() if k not in ("rng", "tensors")}, tensors


@pytest.mark.parametrize("stage", ["teacher", "distill"])
def test_a_killed_and_resumed_run_is_bit_identical_to_an_uninterrupted_one(stage, fit_guides, tmp_path):
    """Stopped after 17 steps (nothing saved since the step-10 checkpoint), rerun to 30 steps:
    weights, EMA, optimizer state, data order and log equal those of a run never stopped."""
    train_cfg = tiny_train(steps=30, checkpoint_every=10, log_every=4, time_sampling="u_shaped", loss="pseudo_huber")
    if stage == "teacher":
        cfg = TeacherConfig(data=DataConfig("normal", "checkerboard"), model=TINY_MODEL, train=train_cfg)
        run = stages.train_teacher
    else:
        cfg = DistillConfig(pairs=fit_guides, model=TINY_MODEL, train=tiny_train(
            steps=30, checkpoint_every=10, log_every=4, target="endpoint", batch_size=250))  # 600 pairs: epochs cross
        run = stages.distill
    run(cfg, tmp_path / "straight", progress=False)
    stopped = run(cfg, tmp_path / "killed", progress=False, stop_after=17)
    assert stopped.step == 17 and load_checkpoint(tmp_path / "killed")[0]["step"] == 10
    resumed = run(cfg, tmp_path / "killed", progress=False)
    assert resumed.step == 30
    state_a, tensors_a = checkpoint_tensors(tmp_path / "straight")
    state_b, tensors_b = checkpoint_tensors(tmp_path / "killed")
    assert tensors_a.keys() == tensors_b.keys() and any(k.startswith("optimizer.") for k in tensors_a)
    for name in tensors_a:
        assert torch.equal(tensors_a[name], tensors_b[name]), name
    assert state_a == state_b
    strip = lambda log: [{k: v for k, v in e.items() if k != "time"} for e in log]  # noqa: E731
    assert strip(resumed.log) == strip(read_log(tmp_path / "straight"))


def test_bf16_autocast_trains_in_float32_weights(tmp_path):
    cfg = TeacherConfig(data=DataConfig("normal", "8gaussians"), model=TINY_MODEL,
                        train=tiny_train(steps=20, bf16=True))
    result = stages.train_teacher(cfg, tmp_path, progress=False)
    assert all(p.dtype == torch.float32 for p in result.model.parameters())
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in result.log)
    assert result.log[-1]["loss"] < result.log[0]["loss"]


def test_a_finished_run_reruns_as_a_no_op_extends_and_refuses_a_changed_config(tmp_path):
    cfg = TeacherConfig(data=DataConfig("normal", "rings"), model=TINY_MODEL, train=tiny_train(steps=10))
    stages.train_teacher(cfg, tmp_path, progress=False)
    assert load_stage("teacher", read_file(tmp_path / "config.yaml")) == cfg  # the record reproduces the run
    first = load_checkpoint(tmp_path)[1]
    assert stages.train_teacher(cfg, tmp_path, progress=False).step == 10
    assert all(torch.equal(first[k], v) for k, v in load_checkpoint(tmp_path)[1].items())
    cfg.train.steps = 20  # more steps: resumes from step 10
    assert stages.train_teacher(cfg, tmp_path, progress=False).step == 20
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["teacher"]["train"]["steps"] == 20
    cfg.train.lr = 1e-4
    changed = "config field 'teacher.train.lr': .* made with 0.003, this run asks for 0.0001"
    with pytest.raises(ConfigError, match=changed):
        stages.train_teacher(cfg, tmp_path, progress=False)


def test_digits_image_to_image_transfer(tmp_path):
    """Transfer between two groups of digit classes: 64-dim teacher, fitted guides, student, image grid."""
    teacher = TeacherConfig(data=DataConfig("digits:0-4", "digits:5-9"), model=TINY_MODEL, train=tiny_train(steps=20))
    stages.train_teacher(teacher, tmp_path / "teacher", progress=False)
    guides = GuidesConfig(teachers=[str(tmp_path / "teacher")], degree=2, generate=tiny_generate(num_samples=200))
    manifest = stages.make_guides(guides, tmp_path / "guides", progress=False)
    assert manifest["dim"] == 64 and manifest["data"] == {"source": "digits:0-4", "target": "digits:5-9"}
    student = DistillConfig(pairs=str(tmp_path / "guides"), model=TINY_MODEL, train=tiny_train(steps=20))
    result = stages.distill(student, tmp_path / "student", progress=False)
    assert result.log[-1]["loss"] < result.log[0]["loss"]
    sample_cfg = SampleConfig(model=str(tmp_path / "student"), num_samples=100, solver=SolverConfig(steps=2))
    summary = stages.sample(sample_cfg, tmp_path / "samples", progress=False)
    assert (tmp_path / "samples" / "samples.png").stat().st_size > 1000 and summary["energy_distance"] > 0
