"""The pipeline on two processes: the real `torchrun` (2 Gloo ranks on the CPU) against one process.

Every launch is `torchrun --nproc_per_node=2` on 127.0.0.1 with a free port and Gloo on the
loopback interface; every wait is bounded and a launch that overruns is killed with its workers.

Tolerance. Two ranks make the update of the same global batch as one process, but their gradient
is summed in another order (each rank its half of the batch, then Gloo adds the halves), so float32
states agree to rounding, not bit for bit: after these runs' tens of AdamW steps a weight tensor
differs by at most ~1.2e-6 of its largest entry (a few ulps) and the optimizer's moments, running
averages of gradients that are sums with much cancellation, by ~2e-6 (measured). Every checkpoint
tensor is compared relative to its largest entry with rtol = atol = 1e-5, while the
gradient of half the batch, what a rank would use without DistributedDataParallel, is off by more
than 10% (checked below). Nothing else is rounded differently: sharded generation equals one
process's output exactly, and a 2-rank job killed and resumed equals one never killed bit for bit.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from ddp_gradients import BATCH, CASES, case_name, cpu_backends, gradients
from safetensors.torch import load_file

from bezier_distill import cli, distributed, stages, store
from bezier_distill.checkpoint import load_checkpoint
from bezier_distill.config import ConfigError, TeacherConfig, TrainConfig
from bezier_distill.distributed import World
from bezier_distill.files import read_json
from bezier_distill.train import read_log

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="finds and kills torchrun's workers through /proc; Gloo on interface 'lo'")

TORCHRUN = Path(sys.executable).with_name("torchrun")  # the console script installed with torch
LAUNCH_TIMEOUT = 240  # seconds for one launch on a loaded 2-core machine (they take ~10 s)
ROUNDING = dict(rtol=1e-5, atol=1e-5)  # float32 tensors of a 2-rank and a 1-process run over their largest entry

TINY = """
teacher:
  data: {source: normal, target: moons}
  model: {width: 64, depth: 2, time_features: 32}
  train: {steps: 80, batch_size: 128, lr: 0.003, warmup_steps: 10, checkpoint_every: 10, log_every: 10,
          ema_decay: 0.99, time_sampling: u_shaped, loss: pseudo_huber}
guides:
  method: fit
  degree: 3
  save_trajectory: true
  generate: {num_samples: 300, chunk_size: 64, seed: 3, solver: {steps: 8}}
distill:
  model: {width: 64, depth: 2, time_features: 32}
  train: {steps: 40, batch_size: 96, lr: 0.003, warmup_steps: 10, checkpoint_every: 20, log_every: 10,
          target: endpoint}
"""


# ---------------------------------------------------------------- launching and killing torchrun jobs

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(args: list[str], log: Path) -> subprocess.Popen:
    """torchrun with 2 ranks on the loopback interface; stdout and stderr go to log."""
    command = [str(TORCHRUN), "--nnodes=1", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    with open(log, "w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, parent pid, ...); None when pid is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def descendants(pid: int) -> list[int]:
    """The processes started by pid, and theirs, from their parent pids in /proc."""
    parents = {int(p.name): _stat(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit()}
    children = [child for child, fields in parents.items() if fields and int(fields[1]) == pid]
    return children + [p for c in children for p in descendants(c)]


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def kill_job(job: subprocess.Popen) -> list[int]:
    """SIGKILLs torchrun and its workers (they run in sessions of their own), by pid; waits until all are gone."""
    pids = [job.pid, *descendants(job.pid)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    job.wait(timeout=30)
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "workers outlived SIGKILL"
        time.sleep(0.05)
    return pids


def torchrun(*args: str, log: Path) -> None:
    """Runs torchrun to the end (bounded); fails the test, with the job's output, when it fails."""
    job = start(list(args), log)
    try:
        job.wait(timeout=LAUNCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        kill_job(job)
        pytest.fail(f"torchrun {' '.join(args)} overran {LAUNCH_TIMEOUT} s:\n{log.read_text()[-3000:]}")
    assert job.returncode == 0, f"torchrun {' '.join(args)} failed:\n{log.read_text()[-3000:]}"


def command(*args: str, progress: bool = False) -> list[str]:
    return [*args, "--device", "cpu", *([] if progress else ["--no-progress"])]


def torchrun_cli(*args: str, log: Path, progress: bool = False) -> None:
    torchrun("-m", "bezier_distill", *command(*args, progress=progress), log=log)


def one_process(*args: str) -> None:
    """The same command in this process, single-threaded like each rank (OMP_NUM_THREADS=1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli.main(command(*args)) == 0
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------- comparing runs

def checkpoint_step(run: Path) -> int:
    try:
        return read_json(run / "checkpoint.json")["step"]
    except (OSError, ValueError):  # not written yet
        return -1


def assert_same_weights(run_a: Path, run_b: Path, exact: bool, rounding: dict = ROUNDING) -> None:
    """Weights, EMA weights and optimizer state of two runs' checkpoints: bit for bit, or to rounding
    (relative to each tensor's largest entry); their steps and data order alike."""
    state_a, tensors_a = load_checkpoint(run_a)
    state_b, tensors_b = load_checkpoint(run_b)
    assert tensors_a.keys() == tensors_b.keys() and any(k.startswith("optimizer.") for k in tensors_a)
    for name in tensors_a:
        if exact:
            assert torch.equal(tensors_a[name], tensors_b[name]), name
        else:
            scale = tensors_b[name].abs().max().clamp_min(torch.finfo(torch.float32).tiny)
            torch.testing.assert_close(tensors_a[name] / scale, tensors_b[name] / scale, **rounding, msg=name)
    assert (state_a["step"], state_a["data_order"]) == (state_b["step"], state_b["data_order"])


def logged(run: Path, key: str) -> list[float]:
    return [entry[key] for entry in read_log(run)]


# ---------------------------------------------------------------- the runs

@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    (root / "tiny.yaml").write_text(TINY)
    return root


@pytest.fixture(scope="module")
def teachers(work) -> tuple[Path, Path]:
    """The tiny teacher trained by one process and by torchrun with 2 ranks: (single, ddp)."""
    one_process("train-teacher", "--config", str(work / "tiny.yaml"), "--out", str(work / "teacher-1"))
    torchrun_cli("train-teacher", "--config", str(work / "tiny.yaml"), "--out", str(work / "teacher-2"),
                 log=work / "teacher-2.log")
    return work / "teacher-1", work / "teacher-2"


@pytest.fixture(scope="module")
def guides(work, teachers) -> Path:
    """Degree-3 fitted guides (with trajectories) of the one-process teacher, made by one process."""
    one_process("make-guides", "--config", str(work / "tiny.yaml"), "--teacher", str(teachers[0]),
                "--out", str(work / "guides-1"))
    return work / "guides-1"


def test_a_teacher_trained_on_two_ranks_matches_one_process(teachers):
    single, ddp = teachers
    assert sorted(p.name for p in ddp.iterdir()) == sorted(p.name for p in single.iterdir())
    assert_same_weights(single, ddp, exact=False)
    assert logged(ddp, "step") == logged(single, "step") == list(range(10, 81, 10))
    # the logged loss is the global batch's: both ranks' halves averaged
    torch.testing.assert_close(logged(ddp, "loss"), logged(single, "loss"), rtol=1e-5, atol=0)
    assert yaml.safe_load((ddp / "config.yaml").read_text()) == yaml.safe_load((single / "config.yaml").read_text())


def test_guides_generated_on_two_ranks_equal_one_process_output_and_resume_by_chunk(work, teachers, guides):
    out = work / "guides-2"
    torchrun_cli("make-guides", "--config", str(work / "tiny.yaml"), "--teacher", str(teachers[0]), "--out", str(out),
                 log=work / "guides-2.log", progress=True)
    # one progress bar, rank 0's, over its share: chunks 0, 2 and 4 (64 + 64 + 44 pairs; rank 1 made 1 and 3)
    bars = (work / "guides-2.log").read_text()
    assert "| 172/172 [" in bars and "/300 [" not in bars and "| 128/128 [" not in bars, bars
    manifest, tensors = store.load(out)
    reference_manifest, reference = store.load(guides)
    assert manifest == reference_manifest and len(manifest["chunks"]) == 5
    assert [(c["count"], c["seed"]) for c in manifest["chunks"]] == [(64, 3)] * 4 + [(44, 3)]
    assert tensors.keys() == reference.keys() == {"x0", "x1", "guides", "trajectory"}
    for name in tensors:
        assert torch.equal(tensors[name], reference[name]), name
    # a rerun, here by one process, makes only the missing chunks (one of each rank) and keeps the others
    for index in (1, 2):
        (out / manifest["chunks"][index]["file"]).unlink()
    kept = {c["file"]: (out / c["file"]).stat().st_mtime_ns for c in manifest["chunks"] if c["index"] not in (1, 2)}
    one_process("make-guides", "--config", str(work / "tiny.yaml"), "--teacher", str(teachers[0]), "--out", str(out))
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept
    assert all(torch.equal(store.load(out)[1][name], reference[name]) for name in reference)


def test_a_student_trained_on_two_ranks_matches_one_process(work, guides):
    args = ("distill", "--config", str(work / "tiny.yaml"), "--pairs", str(guides))
    one_process(*args, "--out", str(work / "student-1"))
    torchrun_cli(*args, "--out", str(work / "student-2"), log=work / "student-2.log")
    assert_same_weights(work / "student-1", work / "student-2", exact=False)  # 300 pairs, batch 96: epochs cross
    torch.testing.assert_close(logged(work / "student-2", "loss"), logged(work / "student-1", "loss"),
                               rtol=1e-5, atol=0)


def test_a_killed_torchrun_job_resumes_exactly_and_on_another_world_size(work, teachers, tmp_path):
    """SIGKILL torchrun and both workers once checkpoints appear; rerun: the same weights as the job
    never killed (bit for bit on 2 ranks, to rounding when resumed by one process)."""
    single, ddp = teachers
    run = tmp_path / "killed"
    args = command("train-teacher", "--config", str(work / "tiny.yaml"), "--out", str(run))
    job = start(["-m", "bezier_distill", *args], tmp_path / "killed.log")
    try:
        deadline = time.monotonic() + LAUNCH_TIMEOUT
        while checkpoint_step(run) < 10:
            assert job.poll() is None, f"the job ended before it was killed:\n{(tmp_path / 'killed.log').read_text()}"
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.01)
    finally:
        killed = kill_job(job)
    assert len(killed) == 3  # torchrun and its two workers
    stopped_at = checkpoint_step(run)
    assert 10 <= stopped_at < 80, stopped_at
    before = read_log(run, up_to_step=stopped_at)  # entries of the killed job, with their times
    shutil.copytree(run, tmp_path / "copy")

    torchrun("-m", "bezier_distill", *args, log=tmp_path / "resumed.log")
    assert read_log(run)[:len(before)] == before  # resumed from the checkpoint, not started again
    assert_same_weights(ddp, run, exact=True)
    strip = lambda log: [{k: v for k, v in e.items() if k != "time"} for e in log]  # noqa: E731
    assert strip(read_log(run)) == strip(read_log(ddp))

    one_process("train-teacher", "--config", str(work / "tiny.yaml"), "--out", str(tmp_path / "copy"))
    assert read_log(tmp_path / "copy")[:len(before)] == before
    assert_same_weights(single, tmp_path / "copy", exact=False)


def test_fused_op_gradients_inside_ddp_equal_one_process_with_the_global_batch(tmp_path):
    """One backward of the fused loss on each rank's half of a global batch, DDP-averaged, against the
    whole batch in one process: every CPU backend, both targets, float32 and float64."""
    out = tmp_path / "grads.safetensors"
    torchrun(str(Path(__file__).with_name("ddp_gradients.py")), str(out), log=tmp_path / "grads.log")
    ddp = load_file(str(out))
    tolerance = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-12, atol=1e-13)}
    for backend in cpu_backends():
        for target, loss, dtype in CASES:
            name = case_name(backend, target, loss, dtype)
            reference = gradients(backend, target, loss, dtype)
            for param, grad in reference.items():
                scale = grad.abs().max()
                torch.testing.assert_close(ddp[f"{name}/{param}"] / scale, grad / scale, **tolerance[dtype],
                                           msg=f"{name}: {param}")
            # the gradient of a rank's half alone is far off (> 10% in every parameter): the tolerance tells them apart
            half = gradients(backend, target, loss, dtype, rows=slice(0, BATCH // 2))
            assert all((half[k] - g).norm() > 0.1 * g.norm() for k, g in reference.items()), name


# ---------------------------------------------------------------- the split itself

def test_ranks_take_equal_contiguous_rows_and_round_robin_chunks(monkeypatch):
    monkeypatch.setattr(distributed, "world", lambda: World(rank=2, size=4))
    assert distributed.batch_rows(128) == slice(64, 96)
    assert distributed.my_chunks(11) == [2, 6, 10]
    assert distributed.batch_problem(126) == "must split evenly across the 4 ranks of this launch, got 126"
    with pytest.raises(ConfigError, match="config field 'teacher.train.batch_size': must split evenly across the 4"):
        stages.train_teacher(TeacherConfig(train=TrainConfig(batch_size=126)), "unused", progress=False)
    monkeypatch.setattr(distributed, "world", lambda: World())
    assert distributed.batch_rows(126) == slice(0, 126) and distributed.my_chunks(3) == [0, 1, 2]


def test_a_rank_without_a_gpu_of_its_own_is_a_one_line_error(monkeypatch):
    """More processes per node than GPUs with --device cuda: rank LOCAL_RANK >= the GPU count would ask
    for a device that does not exist (NCCL takes one GPU per rank)."""
    count = torch.cuda.device_count()
    monkeypatch.setenv("RANK", str(count))
    monkeypatch.setenv("WORLD_SIZE", str(count + 1))
    monkeypatch.setenv("LOCAL_RANK", str(count))
    with pytest.raises(ConfigError, match=rf"^device cuda under torchrun: local rank {count} has no GPU of its own "
                                          rf"\({count} visible\); start at most {count} per node"):
        distributed.rank_device("cuda")
    assert distributed.rank_device("cpu") == torch.device("cpu")
    assert distributed.rank_device("cuda:0") == torch.device("cuda", 0)  # an explicit index is kept
    if count:
        monkeypatch.setenv("LOCAL_RANK", str(count - 1))
        assert distributed.rank_device("cuda") == torch.device("cuda", count - 1)


# ---------------------------------------------------------------- the baselines' loop

def test_baselines_trained_on_two_ranks_match_one_process(tmp_path):
    """CAF (UNet velocity and acceleration models, on images) and MeanFlow (MLP; its JVP on the network inside
    DistributedDataParallel) on 2 ranks: every checkpoint tensor as one process's, to rounding, and the same log.
    The UNet's float32 convolutions round more than the MLP's matrix products when the batch is split (other
    blocking in their backward, which depends on the CPU): after these 12 steps its tensors differ by up to 2.4e-5
    of their largest entry on a Xeon and 1.2e-4 on an AMD EPYC (measured), so they are compared to 5e-4; without
    DistributedDataParallel (each rank on its half alone) they differ by 0.3 (median over tensors; measured on the
    EPYC). (At width 8 every GroupNorm has one channel per group, so the conv biases before one have an exactly
    zero gradient whose rounding noise Adam turns into steps of the learning rate: width 16 here.)"""
    unet = dict(rtol=5e-4, atol=5e-4)
    from ddp_baselines import train_baselines

    torchrun(str(Path(__file__).with_name("ddp_baselines.py")), str(tmp_path / "ddp"), log=tmp_path / "ddp.log")
    train_baselines(tmp_path / "one")
    for run, rounding in (("caf/velocity", unet), ("caf/acceleration", unet), ("meanflow", ROUNDING)):
        assert_same_weights(tmp_path / "ddp" / run, tmp_path / "one" / run, exact=False, rounding=rounding)
        assert load_checkpoint(tmp_path / "one" / run)[0]["step"] == 12, run
        losses = logged(tmp_path / "one" / run, "loss")
        assert len(losses) == 4 and logged(tmp_path / "ddp" / run, "loss") == pytest.approx(losses, rel=1e-5), run
