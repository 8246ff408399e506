"""Injected faults: damaged checkpoints, state files, manifests and chunks, and runs killed mid-write.

Each fault is real bytes on disk (a file cut short, a flipped byte, a deleted file, garbage JSON) or a
real SIGKILL of a subprocess while it writes; the rerun must then end bit-identical to a run that never
met the fault, or stop with one line naming the file and what to do (exit status 2).
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load, load_file, save

from bezier_distill import cli, stages, store
from bezier_distill.checkpoint import STATE, load_checkpoint, read_state
from bezier_distill.config import DataConfig, TeacherConfig
from bezier_distill.errors import ConfigError, DamagedFileError
from bezier_distill.files import canonical_safetensors, read_json

from pipeline_helpers import TINY_MODEL, tiny_train

HERE = Path(__file__).resolve().parent


# ---------------------------------------------------------------- faults

def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # in a safetensors file: a tensor byte; in JSON: a non-UTF-8 byte
    path.write_bytes(bytes(data))


def delete(path: Path) -> None:
    path.unlink()


def garbage(path: Path) -> None:
    path.write_text("{'step': 40,")


FILE_FAULTS = {"truncate": truncate, "flip": flip, "delete": delete}
JSON_FAULTS = {"truncate": truncate, "flip": flip, "garbage": garbage}


def files_of(directory: Path) -> dict[str, bytes]:
    """Every file of directory (but log.jsonl, whose entries hold wall-clock times) and its bytes."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.name != "log.jsonl"}


def logged_losses(run: Path) -> list[tuple[int, float]]:
    return [(e["step"], e["loss"]) for e in map(json.loads, (run / "log.jsonl").read_text().splitlines())]


def one_line_error(capsys, argv: list[str]) -> str:
    """The stderr line of a CLI run that must fail with exit status 2."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def killed_run(argv: list[str], file: str, occurrence: int = 1) -> subprocess.CompletedProcess:
    """Runs the CLI in a subprocess that SIGKILLs itself while writing `file` the occurrence-th time (at the
    fsync of its temp file: the bytes are written, the rename onto `file` has not happened)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    done = subprocess.run([sys.executable, str(HERE / "kill_during_write.py"), file, str(occurrence), *argv],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, f"not killed (exit {done.returncode}):\n{done.stderr}"
    return done


# ---------------------------------------------------------------- checkpoints

@contextmanager
def single_thread():
    """torch single-threaded, as the autouse fixture makes each test (module fixtures are set up before it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


TEACHER_ARGS = ["--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """An uninterrupted tiny teacher run: 60 steps, a checkpoint every 20, the last 2 kept (40 and 60)."""
    out = tmp_path_factory.mktemp("faults") / "reference"
    cfg = TeacherConfig(data=DataConfig("normal", "moons"), model=TINY_MODEL, train=tiny_train(steps=60))
    with single_thread():  # as the tests' reruns (bit-identical needs the same reduction order)
        stages.train_teacher(cfg, out, progress=False)
    return out


def copy_of(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / run.name))


def rerun_teacher(run: Path) -> int:
    return cli.main(["train-teacher", "--config", str(run / "config.yaml"), "--out", str(run), *TEACHER_ARGS])


def training_state(run: Path) -> list[dict]:
    """The kept checkpoints of checkpoint.json less the numpy and python global RNG states, which training
    neither seeds nor uses: they are whatever the process had (another in a subprocess)."""
    entries = [{**e, "rng": {k: v for k, v in e["rng"].items() if k not in ("numpy", "python")}}
               for e in read_state(run)["previous"] + [read_state(run)]]
    return [{k: v for k, v in e.items() if k != "previous"} for e in entries]


def assert_same_run(run: Path, reference: Path) -> None:
    """run ends as reference does: the same files, bit for bit (checkpoint.json but the untouched RNG
    states), and the same logged losses."""
    assert {k: v for k, v in files_of(run).items() if k != STATE} == {
        k: v for k, v in files_of(reference).items() if k != STATE}
    assert training_state(run) == training_state(reference)
    assert logged_losses(run) == logged_losses(reference)


def test_the_last_two_checkpoints_are_kept_by_default_and_k_is_configurable(reference_run, tmp_path):
    assert sorted(p.name for p in reference_run.glob("checkpoint-*")) == [
        "checkpoint-00000040.safetensors", "checkpoint-00000060.safetensors"]
    state = read_state(reference_run)
    assert state["step"] == 60 and [e["step"] for e in state["previous"]] == [40]
    cfg = TeacherConfig(data=DataConfig("normal", "moons"), model=TINY_MODEL,
                       train=tiny_train(steps=40, checkpoint_every=10, keep_checkpoints=3))
    stages.train_teacher(cfg, tmp_path / "k3", progress=False)
    assert sorted(p.name[11:19] for p in (tmp_path / "k3").glob("checkpoint-*")) == ["00000020", "00000030", "00000040"]
    assert [e["step"] for e in read_state(tmp_path / "k3")["previous"]] == [30, 20]


@pytest.mark.parametrize("fault", FILE_FAULTS)
def test_a_damaged_newest_checkpoint_falls_back_to_the_older_one_and_ends_bit_identical(
        fault, reference_run, tmp_path, capsys):
    run = copy_of(reference_run, tmp_path)
    FILE_FAULTS[fault](run / "checkpoint-00000060.safetensors")
    assert rerun_teacher(run) == 0
    err = capsys.readouterr().err
    assert err.startswith("bezier-distill train-teacher: warning: checkpoint ") and err.count("\n") == 1, err
    assert f"'{run}/checkpoint-00000060.safetensors' is {'missing' if fault == 'delete' else 'damaged'}" in err
    assert f"resuming from the older '{run}/checkpoint-00000040.safetensors' (step 40)" in err
    assert_same_run(run, reference_run)


def test_no_intact_checkpoint_is_a_one_line_error_naming_each_file(reference_run, tmp_path, capsys):
    run = copy_of(reference_run, tmp_path)
    flip(run / "checkpoint-00000060.safetensors")
    truncate(run / "checkpoint-00000040.safetensors")
    err = one_line_error(capsys, ["train-teacher", "--config", str(run / "config.yaml"), "--out", str(run),
                                  *TEACHER_ARGS])
    assert err.startswith(f"bezier-distill train-teacher: error: no intact checkpoint in '{run}': "
                          f"'{run}/checkpoint-00000060.safetensors' is damaged (its sha256 differs"), err
    assert f"'{run}/checkpoint-00000040.safetensors' is damaged (its sha256 differs" in err and f"delete '{run}'" in err


@pytest.mark.parametrize("fault", JSON_FAULTS)
def test_an_unreadable_state_file_is_a_one_line_error(fault, reference_run, tmp_path, capsys):
    run = copy_of(reference_run, tmp_path)
    JSON_FAULTS[fault](run / STATE)
    err = one_line_error(capsys, ["train-teacher", "--config", str(run / "config.yaml"), "--out", str(run),
                                  *TEACHER_ARGS])
    assert err.startswith(f"bezier-distill train-teacher: error: checkpoint state '{run}/{STATE}' is unreadable "
                          "(not valid JSON: "), err
    assert f"delete '{run}' to train it again from the start" in err
    # the stages that load the model say the same
    err = one_line_error(capsys, ["sample", "--model", str(run), "--out", str(tmp_path / "s"), *TEACHER_ARGS])
    assert f"checkpoint state '{run}/{STATE}' is unreadable" in err


def test_a_state_file_that_is_json_but_no_checkpoint_is_a_one_line_error(reference_run, tmp_path, capsys):
    run = copy_of(reference_run, tmp_path)
    (run / STATE).write_text('{"step": 60, "tensors": {"file": "checkpoint-00000060.safetensors"}}')
    err = one_line_error(capsys, ["train-teacher", "--config", str(run / "config.yaml"), "--out", str(run),
                                  *TEACHER_ARGS])
    assert f"checkpoint state '{run}/{STATE}' is unreadable (a checkpoint in it lacks" in err


@pytest.mark.parametrize("text", ["teacher: {train: [unclosed", "just a string"], ids=["not-yaml", "not-a-mapping"])
def test_an_unreadable_recorded_config_is_a_one_line_error(text, reference_run, tmp_path, capsys):
    run = copy_of(reference_run, tmp_path)
    config = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(text)
    (tmp_path / "exp.yaml").write_text(config)
    err = one_line_error(capsys, ["train-teacher", "--config", str(tmp_path / "exp.yaml"), "--out", str(run),
                                  *TEACHER_ARGS])
    assert err.startswith(f"bezier-distill train-teacher: error: '{run}/config.yaml' is unreadable ("), err


def test_a_deleted_state_file_trains_again_from_the_start_to_the_same_result(reference_run, tmp_path):
    run = copy_of(reference_run, tmp_path)
    (run / STATE).unlink()  # as a kill before the first state write leaves it: tensors but no state
    assert rerun_teacher(run) == 0
    assert_same_run(run, reference_run)


def test_a_damaged_model_names_the_command_that_repairs_it_and_that_command_does(reference_run, tmp_path, capsys):
    run = copy_of(reference_run, tmp_path)
    truncate(run / "checkpoint-00000060.safetensors")
    err = one_line_error(capsys, ["sample", "--model", str(run), "--out", str(tmp_path / "s"), *TEACHER_ARGS])
    assert err.startswith(f"bezier-distill sample: error: checkpoint '{run}/checkpoint-00000060.safetensors' is "
                          "damaged (its sha256 differs from the one in checkpoint.json); rerun `"), err
    command = err.split("`")[1]
    assert command == f"bezier-distill train-teacher --config {run}/config.yaml --out {run}"
    assert cli.main([*shlex.split(command)[1:], *TEACHER_ARGS]) == 0
    assert_same_run(run, reference_run)
    assert cli.main(["sample", "--model", str(run), "--out", str(tmp_path / "s"), *TEACHER_ARGS,
                     "--set", "sample.num_samples=64", "--set", "sample.plot=false"]) == 0


@pytest.mark.parametrize("file, occurrence", [("checkpoint-00000040.safetensors", 1), (STATE, 2)],
                         ids=["tensors", "state"])
def test_a_run_killed_while_writing_a_checkpoint_resumes_bit_identical(file, occurrence, reference_run, tmp_path):
    run = tmp_path / "run"
    killed_run(["train-teacher", "--config", str(reference_run / "config.yaml"), "--out", str(run), *TEACHER_ARGS],
               file, occurrence)
    assert list(run.glob(f".{file}.*.tmp")), "the kill left no half-written temp file"
    assert load_checkpoint(run)[0]["step"] == 20  # the checkpoint of step 40 never took effect
    assert rerun_teacher(run) == 0
    assert not list(run.glob(".*.tmp"))  # the stale temp file was removed
    assert_same_run(run, reference_run)


# ---------------------------------------------------------------- datasets

GUIDE_ARGS = ["--device", "cpu", "--no-progress", "--set", "guides.method=fit", "--set", "guides.degree=2",
              "--set", "guides.generate.num_samples=600", "--set", "guides.generate.chunk_size=256",
              "--set", "guides.generate.solver.steps=4"]


def make_guides(teacher: str, out: Path) -> int:
    return cli.main(["make-guides", "--teacher", teacher, "--out", str(out), *GUIDE_ARGS])


@pytest.fixture(scope="module")
def reference_guides(teacher_run, tmp_path_factory) -> Path:
    """An uninterrupted make-guides run: 600 fit guides of degree 2 in chunks of 256, 256 and 88."""
    out = tmp_path_factory.mktemp("faults") / "guides"
    with single_thread():
        assert make_guides(teacher_run, out) == 0
    return out


def test_each_chunk_sha256_is_in_the_manifest_and_no_digest_file_is_left(reference_guides):
    manifest = read_json(reference_guides / store.MANIFEST)
    assert manifest["complete"] and len(manifest["chunks"]) == 3
    for chunk in manifest["chunks"]:
        assert hashlib.sha256((reference_guides / chunk["file"]).read_bytes()).hexdigest() == chunk["sha256"]
    assert sorted(p.name for p in reference_guides.iterdir()) == [
        "chunk-00000.safetensors", "chunk-00001.safetensors", "chunk-00002.safetensors", "config.yaml",
        "manifest.json"]


@pytest.mark.parametrize("fault", FILE_FAULTS)
def test_a_damaged_chunk_is_a_one_line_error_naming_it_and_the_command_that_repairs_it(
        fault, reference_guides, tmp_path, capsys):
    guides = copy_of(reference_guides, tmp_path)
    FILE_FAULTS[fault](guides / "chunk-00001.safetensors")
    with pytest.raises(DamagedFileError, match="chunk-00001"):
        store.load(guides)
    err = one_line_error(capsys, ["distill", "--pairs", str(guides), "--out", str(tmp_path / "student"),
                                  *TEACHER_ARGS])
    what = "missing" if fault == "delete" else "damaged (its sha256 differs from the one in manifest.json)"
    assert err.startswith(f"bezier-distill distill: error: chunk '{guides}/chunk-00001.safetensors' of dataset "
                          f"'{guides}' is {what}; rerun `"), err
    command = err.split("`")[1]
    assert command == f"bezier-distill make-guides --config {guides}/config.yaml --out {guides}"
    untouched = {name: (guides / name).stat().st_mtime_ns for name in ("chunk-00000.safetensors",
                                                                       "chunk-00002.safetensors")}
    assert cli.main([*shlex.split(command)[1:], "--device", "cpu", "--no-progress"]) == 0
    assert f"warning: chunk '{guides}/chunk-00001.safetensors' is" in capsys.readouterr().err
    assert files_of(guides) == files_of(reference_guides)  # the remade chunk is bit-identical
    assert {name: (guides / name).stat().st_mtime_ns for name in untouched} == untouched


@pytest.mark.parametrize("fault", {**JSON_FAULTS, "delete": delete})
def test_a_damaged_manifest_is_a_one_line_error_and_a_rerun_remakes_the_dataset(
        fault, reference_guides, teacher_run, tmp_path, capsys):
    guides = copy_of(reference_guides, tmp_path)
    {**JSON_FAULTS, "delete": delete}[fault](guides / store.MANIFEST)
    with pytest.raises(ConfigError, match="manifest.json"):
        store.load(guides)
    err = one_line_error(capsys, ["distill", "--pairs", str(guides), "--out", str(tmp_path / "student"),
                                  *TEACHER_ARGS])
    if fault == "delete":
        assert f"'{guides}' is not a dataset (no manifest.json)" in err
    else:
        assert f"dataset manifest '{guides}/manifest.json' is unreadable (not valid JSON: " in err
        assert f"rerun `bezier-distill make-guides --config {guides}/config.yaml --out {guides}`" in err
    assert make_guides(teacher_run, guides) == 0
    if fault != "delete":
        assert "manifest.json' is unreadable (not valid JSON: " in capsys.readouterr().err
    assert files_of(guides) == files_of(reference_guides)


@pytest.mark.parametrize("file", ["chunk-00001.safetensors", "chunk-00001.sha256"])
def test_a_generation_killed_while_writing_a_chunk_resumes_bit_identical(file, reference_guides, teacher_run,
                                                                          tmp_path):
    guides = tmp_path / "guides"
    killed_run(["make-guides", "--teacher", teacher_run, "--out", str(guides), *GUIDE_ARGS], file)
    assert list(guides.glob(f".{file}.*.tmp")), "the kill left no half-written temp file"
    assert not read_json(guides / store.MANIFEST)["complete"]
    with pytest.raises(ConfigError, match="incomplete; rerun `bezier-distill make-guides"):
        store.load(guides)
    assert make_guides(teacher_run, guides) == 0
    assert files_of(guides) == files_of(reference_guides)
    manifest, tensors = store.load(guides)
    assert torch.equal(tensors["x0"][256:512], load_file(str(reference_guides / "chunk-00001.safetensors"))["x0"])


def test_a_damaged_chunk_of_a_reflow_coupling_names_the_reflow_command(tmp_path):
    manifest = {"producer": {"stage": "reflow"}}
    assert store.repair_hint(tmp_path / "rf2" / "coupling", manifest) == (
        f"rerun `bezier-distill reflow --config {tmp_path}/rf2/config.yaml --out {tmp_path}/rf2`")
    assert store.repair_hint(tmp_path / "rf2" / "coupling") == store.repair_hint(tmp_path / "rf2" / "coupling",
                                                                                manifest)



# ---------------------------------------------------------------- the CLI's one place for user-facing failures

def test_sigterm_stops_a_run_with_one_line_and_status_130(reference_run, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "bezier_distill", "train-teacher", "--config", str(reference_run / "config.yaml"),
            "--out", str(run), "--set", "teacher.train.steps=1000000", *TEACHER_ARGS]
    with subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True) as process:
        deadline = time.monotonic() + 120
        while not (run / STATE).is_file() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        err = process.stderr.read()
    assert process.returncode == 130, err
    assert err == "bezier-distill train-teacher: interrupted; rerun the same command to resume\n"


def test_a_file_system_error_is_one_line(tmp_path, capsys):
    (tmp_path / "taken").write_text("a file, not a directory")
    err = one_line_error(capsys, ["train-teacher", "--out", str(tmp_path / "taken" / "rf1"), *TEACHER_ARGS])
    assert err == f"bezier-distill train-teacher: error: Not a directory: '{tmp_path / 'taken' / 'rf1'}'\n"


def test_a_programming_error_still_raises(monkeypatch, tmp_path):
    def broken(cfg, out_dir, device, progress):
        raise ValueError("a bug, not a user error")

    monkeypatch.setitem(cli.COMMANDS, "train-teacher", ("teacher", broken, "broken"))
    with pytest.raises(ValueError, match="a bug"):
        cli.main(["train-teacher", "--out", str(tmp_path / "rf1"), *TEACHER_ARGS])


def test_canonical_safetensors_bytes_do_not_depend_on_the_metadata_order():
    tensors = {"b": torch.arange(3.0), "a": torch.ones(2, 2)}
    one = canonical_safetensors(save(tensors, metadata={"index": "1", "start": "4", "seed": "3"}))
    two = canonical_safetensors(save(tensors, metadata={"seed": "3", "start": "4", "index": "1"}))
    assert one == two and int.from_bytes(one[:8], "little") % 8 == 0  # the data stay 8-byte aligned
    loaded = load(one)
    assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], tensors[k]) for k in tensors)
