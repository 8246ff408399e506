"""Smoke test of the benchmark CLI (benchmarks/run.py) on a tiny configuration.

Checks that every output file is written, that the traffic follows the documented formula, and
that the markdown tables show the numbers of the CSV/JSON rows. Timings are not asserted.
"""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bezier_kernels as bk

ROOT = Path(__file__).resolve().parents[2]
OPS = ("position+velocity", "loss_fwd_bwd:velocity:mse")
B, D, DEGREE = 8, 4, 2


def _table(markdown: str, heading: str) -> list[list[str]]:
    """The cells of the markdown table under `## heading`."""
    section = markdown.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def _close(cell: str, value: float) -> bool:
    """A table cell (3 significant digits) shows value."""
    return math.isclose(float(cell), value, rel_tol=5e-3)


@pytest.mark.skipif(not bk.available_backends()["cpp"].available, reason="the cpp backend is not built")
def test_cli_writes_every_output(tmp_path):
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "benchmarks.run", "--device", "cpu", "--ops", *OPS, "--degrees", str(DEGREE),
           "--sizes", f"{B}x{D}", "--repeats", "2", "--warmup", "1", "--providers", "eager", "cpp",
           "--compile", "none", "--copy-mb", "4", "--train-cases", "mlp2d", "--train-batch", "16", "--out", str(out)]
    settings = {"MALLOC_ARENA_MAX": "4"}  # an allocator setting the run must record (it changes the timings)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **settings})
    assert proc.returncode == 0, proc.stderr[-3000:]

    names = ("ops.csv", "train_step.csv", "results.json", "results.md", "gbps.png")
    for name in names:
        assert (out / name).stat().st_size > 0, name
    assert (out / "gbps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    result = json.loads((out / "results.json").read_text())
    env = result["environment"]
    assert env["device_type"] == "cpu" and env["threads"] >= 1 and env["torch"] and env["git_revision"]
    assert env["settings"]["MALLOC_ARENA_MAX"] == "4"
    assert result["copy_bandwidth"]["gbps"] > 0
    rows = result["rows"]
    assert [(r["op"], r["provider"]) for r in rows] == [(op, p) for op in OPS for p in ("eager", "cpp")]
    assert all(not r["error"] for r in rows)

    # compulsory traffic, float32: (n+1) points + 2 outputs; loss fwd+bwd: (n+3) [B,D] + t + 2 scalars
    expected_traffic = {OPS[0]: (DEGREE + 3) * B * D * 4 + 4 * B, OPS[1]: (DEGREE + 3) * B * D * 4 + 4 * B + 8}
    for r in rows:
        assert r["traffic_bytes"] == expected_traffic[r["op"]]
        assert math.isclose(r["gbps"], r["traffic_bytes"] / (r["median_ms"] * 1e-3) / 1e9)
        assert math.isclose(r["copy_fraction"], r["gbps"] / result["copy_bandwidth"]["gbps"])
        assert r["min_ms"] <= r["median_ms"] <= r["max_ms"]
        assert r["peak_extra_bytes"] > 0
        eager = next(e for e in rows if e["op"] == r["op"] and e["provider"] == "eager")
        assert math.isclose(r["vs_eager"], eager["median_ms"] / r["median_ms"]) and r["vs_compiled"] is None

    with open(out / "ops.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == len(rows)
    for c, r in zip(csv_rows, rows):
        assert (c["op"], c["provider"]) == (r["op"], r["provider"]) and float(c["median_ms"]) == r["median_ms"]

    markdown = (out / "results.md").read_text()
    assert "; MALLOC_ARENA_MAX=4" in markdown.splitlines()[2]
    table = _table(markdown, "Every op")
    assert len(table) == len(rows)
    for cells, r in zip(table, rows):
        assert cells[:5] == [r["op"], str(DEGREE), f"{B}x{D}", "float32", r["provider"]]
        for cell, field in zip((cells[5], cells[7], cells[9]), ("median_ms", "gbps", "vs_eager")):
            assert _close(cell, r[field]), (field, cell, r[field])
        assert _close(cells[11], r["peak_extra_bytes"] / 1e6)

    train = result["train_step"]
    assert [t["provider"] for t in train] == ["eager", "cpp"] and all(not t["error"] for t in train)
    for cells, t in zip(_table(markdown, "Training step (forward, loss, backward, AdamW)"), train):
        assert cells[3] == t["provider"] and _close(cells[4], t["median_ms"])
    with open(out / "train_step.csv") as f:
        assert [row["provider"] for row in csv.DictReader(f)] == ["eager", "cpp"]


@pytest.mark.skipif(not bk.available_backends()["cpp"].available, reason="the cpp backend is not built")
def test_a_time_limit_writes_what_was_measured_and_says_so(tmp_path):
    from benchmarks import run

    common = ["--device", "cpu", "--ops", OPS[0], "--degrees", str(DEGREE), "--sizes", f"{B}x{D}", "16x2",
              "--repeats", "2", "--warmup", "1", "--providers", "eager", "cpp", "--compile", "none", "--copy-mb", "1",
              "--train-cases", "mlp2d", "--train-batch", "16"]
    result = run.main([*common, "--time-limit", "0", "--out", str(tmp_path / "none")])
    assert result["rows"] == [] and result["train_step"] == []
    assert "0 of 2 (dtype, size, degree) cases and 0 of 2 training-step rows" in result["stopped_early"]
    assert "**Partial run**: stopped early at the 0 s time limit" in (tmp_path / "none" / "results.md").read_text()
    assert json.loads((tmp_path / "none" / "results.json").read_text())["stopped_early"] == result["stopped_early"]

    result = run.main([*common, "--time-limit", "600", "--train-providers", "cpp", "--out", str(tmp_path / "all")])
    assert result["stopped_early"] == "" and len(result["rows"]) == 4
    assert [t["provider"] for t in result["train_step"]] == ["cpp"]
    assert "Partial run" not in (tmp_path / "all" / "results.md").read_text()
    # no time limit, and a case no provider measures (compiled, compiling nowhere): not "stopped early"
    result = run.main([*common, "--providers", "compiled", "--train-cases", "--out", str(tmp_path / "empty")])
    assert result["rows"] == [] and result["stopped_early"] == ""
    with pytest.raises(SystemExit, match=r"training-step providers \['cuda'\] are not among"):
        run.main([*common, "--train-providers", "cuda", "--out", str(tmp_path / "bad")])
