"""benchmarks.gpu_check on a CPU: the refusal without a GPU, the dry run, and the auto table that
backend="auto" reads (building it from rows, reading it, rejecting a broken one), the steps' commands
and their clean-up."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import bezier_kernels as bk
from benchmarks import gpu_check
from bezier_kernels import backends

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_refuses_without_a_gpu():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "no CUDA device" in proc.stderr


@pytest.mark.skipif(not bk.available_backends()["cpp"].available, reason="the cpp backend is not built")
def test_dry_run_prints_every_step_with_its_budget(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--dry-run", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for step in gpu_check.STEPS:
        assert f"{step.name:8} (budget {step.budget_s:3d} s)" in proc.stdout
    assert sum(step.budget_s for step in gpu_check.STEPS) <= 9 * 60
    assert "kernel cases of cpp passed" in proc.stdout
    assert f"torch {torch.__version__}, " in proc.stdout and "setuptools " in proc.stdout.splitlines()[0]
    table = json.loads((tmp_path / "auto_table.json").read_text())
    assert {(e["op"], e["size_class"]) for e in table["entries"]} == {("path", "small"), ("loss", "small")}


@pytest.mark.skipif(gpu_check.shutil.which("nvcc") is None, reason="no nvcc on PATH (CUDA's compiler)")
def test_the_cuda_toolkit_is_the_one_nvcc_runs(monkeypatch):
    """Without CUDA_HOME, the toolkit whose headers the nvcc on PATH compiles with (on this project's CI
    machines nvcc is a wrapper script in /usr/local/bin, where torch's own guess finds no headers)."""
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    home = Path(gpu_check.cuda_home())
    assert (home / "include" / "cuda_runtime.h").is_file() and (home / "bin" / "nvcc").is_file()
    monkeypatch.setenv("CUDA_HOME", "/opt/some-cuda")
    assert gpu_check.cuda_home() == "/opt/some-cuda"


def test_the_tests_step_runs_one_worker_per_core_where_xdist_is_installed():
    cmd, env = gpu_check.tests_command("python3", 16, xdist=True)
    assert cmd[-3:] == ["-n", "16", "tests"] and env == {"OMP_NUM_THREADS": "1"}
    cmd, env = gpu_check.tests_command("python3", 32, xdist=True)
    assert cmd[-3:] == ["-n", "16", "tests"] and env == {"OMP_NUM_THREADS": "2"}
    for cpus, xdist in ((16, False), (1, True)):
        cmd, env = gpu_check.tests_command("python3", cpus, xdist)
        assert "-n" not in cmd and cmd[-1] == "tests" and env == {}


def test_the_steps_commands(tmp_path, monkeypatch):
    """Memcheck sees each tensor as its own allocation (under PyTorch's caching allocator a write past a
    tensor's end lands inside a larger cudaMalloc segment, unseen); the benchmarks run to a time limit."""
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")  # else read off the GPU
    commands = gpu_check._commands(tmp_path)
    cmd, env = commands["memcheck"]
    assert cmd[:3] == ["compute-sanitizer", "--tool", "memcheck"] and env["PYTORCH_NO_CUDA_MEMORY_CACHING"] == "1"
    assert commands["install"][1]["TORCH_CUDA_ARCH_LIST"] == "9.0"
    budgets = {step.name: step.budget_s for step in gpu_check.STEPS}
    for name in ("bench", "train"):  # they stop starting cases in time to write what they measured
        assert commands[name][0][-2:] == ["--time-limit", str(budgets[name] - gpu_check.BENCH_MARGIN_S)]
        assert budgets[name] - gpu_check.BENCH_MARGIN_S >= 30


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("stopped", [True, False], ids=["stopped-at-its-budget", "exited"])
def test_a_step_leaves_no_process_behind(tmp_path, stopped):
    """A step's command and everything it started (a grandchild here, as pytest-xdist's workers) end
    with the step, whether it overran its budget or exited leaving a child behind."""
    pidfile = tmp_path / "pid"
    script = f"sleep 120 & echo $! > {pidfile}; " + ("wait" if stopped else "exit 0")
    passed, result = gpu_check._run(["bash", "-c", script], 1 if stopped else 60, tmp_path / "step.log")
    assert passed is not stopped
    assert ("stopped at its 1 s budget" in result) is stopped
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(pid)


def _row(op, provider, batch, features, vs_eager, dtype="float32"):
    return {"op": op, "provider": provider, "batch": batch, "features": features, "dtype": dtype,
            "vs_eager": vs_eager, "error": ""}


def test_auto_table_picks_the_fastest_backend_per_class():
    rows = [_row("position+velocity", "eager", 256, 64, 1.0), _row("position+velocity", "triton", 256, 64, 2.0),
            _row("position+velocity", "cuda", 256, 64, 3.0), _row("position", "cuda", 4096, 2, 2.0),
            _row("position", "triton", 4096, 2, 8.0), _row("loss_fwd_bwd:velocity:mse", "triton", 65536, 1024, 0.5),
            _row("position+velocity", "cuda", 65536, 1024, 4.0, dtype="bfloat16")]
    entries = {(e["op"], e["dtype"], e["size_class"]): e["backend"] for e in gpu_check.build_auto_table(rows, "cuda")}
    # small paths: cuda 3x and 2x (geometric mean sqrt(6)) against triton 2x and 8x (4x): triton
    assert entries == {("path", "float32", "small"): "triton", ("loss", "float32", "large"): "torch",
                       ("path", "bfloat16", "large"): "cuda"}


def test_auto_reads_the_table(tmp_path, monkeypatch):
    if not bk.available_backends()["cpp"].available:
        pytest.skip(bk.available_backends()["cpp"].reason)
    path = tmp_path / "auto_table.json"
    path.write_text(json.dumps({"entries": [
        {"device_type": "cpu", "op": "path", "dtype": "float32", "size_class": "small", "backend": "torch"}]}))
    monkeypatch.setenv(backends.AUTO_TABLE_ENV, str(path))
    backends.reload_auto_table()
    try:
        cpu = torch.device("cpu")
        assert backends.resolve_backend("auto", cpu, 3, "path", torch.float32, 256 * 2) == "torch"
        # no entry: the documented preference
        assert backends.resolve_backend("auto", cpu, 3, "path", torch.float32, 1 << 23) == "cpp"
        assert backends.resolve_backend("auto", cpu, 3, "loss", torch.float32, 256 * 2) == "cpp"
        assert backends.resolve_backend("auto", cpu, 3, "path", torch.float64, 256 * 2) == "cpp"
        x0, x1, t = torch.randn(4, 3), torch.randn(4, 3), torch.rand(4)
        torch.testing.assert_close(bk.bezier(x0, x1, t)[1], x1 - x0)
        path.write_text("{not json")
        backends.reload_auto_table()
        with pytest.raises(ValueError, match="auto table"):
            bk.bezier(x0, x1, t)
    finally:
        monkeypatch.delenv(backends.AUTO_TABLE_ENV)
        backends.reload_auto_table()


def test_size_classes():
    assert [backends.size_class(n) for n in (1, (1 << 16) - 1, 1 << 16, (1 << 22) - 1, 1 << 22)] == [
        "small", "small", "medium", "medium", "large"]
