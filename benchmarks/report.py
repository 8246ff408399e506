"""Writes a benchmark run: CSV and JSON (rows + environment), a markdown report and a PNG plot.

Every number in the markdown and the plot is read from the rows that go into the CSV/JSON.
The issue's performance targets are checked per row, so misses are visible (not tests).
"""
from __future__ import annotations

import csv
import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

import bezier_kernels as bk

ROW_FIELDS = ("op", "degree", "batch", "features", "dtype", "provider", "sets", "repeats", "median_ms", "min_ms",
              "max_ms", "first_call_ms", "traffic_bytes", "gbps", "copy_fraction", "vs_eager", "vs_compiled",
              "peak_extra_bytes", "peak_extra_tensors", "error", "vs_mse", "operators")
TRAIN_FIELDS = ("case", "provider", "batch", "features", "hidden", "layers", "degree", "parameters", "repeats",
                "median_ms", "min_ms", "max_ms", "first_call_ms", "vs_eager", "vs_compiled", "error")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            models = re.findall(r"^model name\s*:\s*(.+)$", f.read(), flags=re.M)
        if models:
            return models[0].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_revision() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("-dirty" if dirty else "")


# environment variables that change what a run measures (the allocator, threading), recorded when set
SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_ARENA_MAX", "LD_PRELOAD", "OMP_NUM_THREADS",
            "BEZIER_KERNELS_BACKEND", "TRITON_INTERPRET")


def environment(device: torch.device) -> dict:
    """Where and when: device, versions, git revision, date, threads, load, settings from the environment."""
    now = dt.datetime.now(dt.timezone.utc)
    return {
        "date": now.strftime("%Y-%m-%d"),
        "time_utc": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device_type": device.type,
        "device_name": device_name(device),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "python": platform.python_version(),
        "git_revision": _git_revision(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_start": list(os.getloadavg()),
        "cuda": torch.version.cuda,
        "backends": {name: str(info) for name, info in bk.available_backends().items()},
        "settings": {name: os.environ[name] for name in SETTINGS if name in os.environ},
    }


def default_out_dir(env: dict) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", f"{env['device_type']} {env['device_name']}".lower()).strip("-")
    return Path(__file__).resolve().parent / "results" / f"{env['date']}-{slug}"


def add_speedups(rows: list[dict], key_fields: tuple[str, ...]) -> None:
    """vs_eager / vs_compiled / vs_mse = the eager / compiled / plain-mse median over the row's median, among
    rows with equal key_fields."""
    medians = {(tuple(r[k] for k in key_fields), r["provider"]): r["median_ms"] for r in rows if not r["error"]}
    for r in rows:
        if r["error"]:
            continue
        key = tuple(r[k] for k in key_fields)
        for field, provider in (("vs_eager", "eager"), ("vs_compiled", "compiled"), ("vs_mse", "mse")):
            base = medians.get((key, provider))
            r[field] = base / r["median_ms"] if base is not None else None


# providers that are references, not candidates: the eager reference, torch.compile of it, plain mse_loss
BASELINES = ("eager", "compiled", "mse")


# ----------------------------------------------------------------------------- targets
@dataclass(frozen=True)
class Target:
    """A performance goal of the issues, checked on matching rows of a fused provider."""

    ops: tuple[str, ...]
    vs_eager: float
    vs_compiled: float | None
    max_degree: int = 64
    min_elements: int = 0
    dtypes: tuple[str, ...] = ("float32", "bfloat16", "float16")
    copy_fraction: float | None = None
    max_peak_tensors: float | None = None
    vs_mse: float | None = None  # plain F.mse_loss fwd+bwd time over the row's: 0.5 = "at most 2x mse"
    max_elements: int | None = None
    degrees: tuple[int, ...] | None = None

    def applies(self, row: dict) -> bool:
        elements = row["batch"] * row["features"]
        return (row["op"] in self.ops and row["degree"] <= self.max_degree and row["dtype"] in self.dtypes
                and elements >= self.min_elements and (self.max_elements is None or elements <= self.max_elements)
                and (self.degrees is None or row["degree"] in self.degrees))

    def verdict(self, row: dict) -> str:
        """"met", or "MISSED: ..." naming each miss; comparisons that did not run are named too."""
        misses, unmeasured = [], []
        goals = (("vs_eager", self.vs_eager), ("vs_compiled", self.vs_compiled), ("vs_mse", self.vs_mse))
        for field, goal in ((f, g) for f, g in goals if g is not None):
            if row.get(field) is None:
                unmeasured.append(field.replace("_", " "))
            elif row[field] < goal:
                misses.append(f"{field.replace('_', ' ')} {row[field]:.2f}x < {goal}x")
        if self.copy_fraction is not None and row["copy_fraction"] < self.copy_fraction:
            misses.append(f"copy {row['copy_fraction']:.0%} < {self.copy_fraction:.0%}")
        if self.max_peak_tensors is not None and row["peak_extra_tensors"] > self.max_peak_tensors:
            misses.append(f"peak {row['peak_extra_tensors']:.2f} > {self.max_peak_tensors:g} [B,D]")
        verdict = "MISSED: " + "; ".join(misses) if misses else "met"
        return verdict + (f" ({', '.join(unmeasured)} not measured)" if unmeasured else "")


_LOSS_FWD_BWD = tuple(f"loss_fwd_bwd:{t}:{l}" for t in ("velocity", "endpoint") for l in ("mse", "pseudo_huber"))
# issue 18: the sizes flow codebases train toys at (256x2, 4096x2, 256x64), degree 3
_SMALL = {"min_elements": 512, "max_elements": 1 << 14, "degrees": (3,)}
TARGETS = {
    # issue 6: cpp >= 3x eager and >= 1.2x compiled, position+velocity at every degree and loss fwd+bwd
    # (bandwidth-bound sizes); issue 18: >= 3x eager at small sizes, the loss at most 2x a plain mse_loss
    "cpu": (Target(("position+velocity",) + _LOSS_FWD_BWD, vs_eager=3.0, vs_compiled=1.2, min_elements=1 << 20),
            Target(("position+velocity",), vs_eager=3.0, vs_compiled=None, **_SMALL),
            Target(_LOSS_FWD_BWD, vs_eager=3.0, vs_compiled=None, vs_mse=0.5, **_SMALL)),
    # issues 3 and 4: position+velocity at degree 1..16, B*D >= 16M float32: >= 85% of copy bandwidth,
    # 2.5x eager, 1.3x compiled; loss fwd+bwd 3x eager, 1.3x compiled, peak extra <= one [B, *F]
    "cuda": (Target(("position+velocity",), vs_eager=2.5, vs_compiled=1.3, max_degree=16, min_elements=1 << 24,
                    dtypes=("float32",), copy_fraction=0.85),
             Target(_LOSS_FWD_BWD, vs_eager=3.0, vs_compiled=1.3, max_peak_tensors=1.0)),
}


# ----------------------------------------------------------------------------- formatting
def fmt(value, digits: int = 3) -> str:
    """Numbers for the tables: 3 significant digits, "-" for missing."""
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _size(row: dict) -> str:
    return f"{row['batch']}x{row['features']}"


def _table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out)


def op_table(rows: Sequence[dict]) -> str:
    header = ("op", "degree", "BxD", "dtype", "provider", "median ms", "min-max ms", "GB/s", "of copy",
              "vs eager", "vs compiled", "peak extra MB", "peak [B,D]", "operators")
    lines = []
    for r in rows:
        if r["error"]:
            lines.append((r["op"], str(r["degree"]), _size(r), r["dtype"], r["provider"], "error: " + r["error"][:60])
                         + ("",) * 8)
            continue
        lines.append((r["op"], str(r["degree"]), _size(r), r["dtype"], r["provider"], fmt(r["median_ms"]),
                      f"{fmt(r['min_ms'])}-{fmt(r['max_ms'])}", fmt(r["gbps"]), fmt(r["copy_fraction"], 2),
                      fmt(r["vs_eager"]), fmt(r["vs_compiled"]), fmt(r["peak_extra_bytes"] / 1e6),
                      fmt(r["peak_extra_tensors"]), fmt(r.get("operators"))))
    return _table(header, lines)


def _spread(row: dict | None) -> str:
    """"median (min-max)" in ms."""
    if row is None or row["error"]:
        return "-"
    return f"{fmt(row['median_ms'])} ({fmt(row['min_ms'])}-{fmt(row['max_ms'])})"


def target_table(rows: Sequence[dict], device_type: str) -> str:
    """One line per fused row under a target: the three providers' times, the ratios, the verdict."""
    header = ("op", "degree", "BxD", "dtype", "provider", "ms median (min-max)", "eager ms", "compiled ms",
              "vs eager", "vs compiled", "GB/s", "of copy", "peak [B,D]", "mse ms", "vs mse", "target")
    by_case = {(r["op"], r["degree"], r["batch"], r["features"], r["dtype"], r["provider"]): r for r in rows}
    lines = []
    for target in TARGETS.get(device_type, ()):
        for r in rows:
            if r["provider"] in BASELINES or r["error"] or not target.applies(r):
                continue
            key = (r["op"], r["degree"], r["batch"], r["features"], r["dtype"])
            lines.append((r["op"], str(r["degree"]), _size(r), r["dtype"], r["provider"], _spread(r),
                          _spread(by_case.get(key + ("eager",))), _spread(by_case.get(key + ("compiled",))),
                          fmt(r["vs_eager"]), fmt(r["vs_compiled"]), fmt(r["gbps"]), fmt(r["copy_fraction"], 2),
                          fmt(r["peak_extra_tensors"]), _spread(by_case.get(key + ("mse",))), fmt(r.get("vs_mse")),
                          target.verdict(r)))
    return _table(header, lines)


def host_table(rows: Sequence[dict], max_elements: int = 64) -> str:
    """The host-overhead rows (tiny tensors: the time is the host's): median us and operators per call."""
    header = ("op", "degree", "BxD", "provider", "median us", "vs eager", "operators per call")
    lines = [(r["op"], str(r["degree"]), _size(r), r["provider"], fmt(r["median_ms"] * 1e3), fmt(r["vs_eager"]),
              fmt(r.get("operators"))) for r in rows
             if not r["error"] and r["batch"] * r["features"] <= max_elements]
    return _table(header, lines)


def train_table(rows: Sequence[dict]) -> str:
    header = ("case", "BxD", "MLP", "provider", "median ms", "min-max ms", "vs eager", "vs compiled", "first call s")
    lines = []
    for r in rows:
        mlp = f"{r['layers']}x{r['hidden']} ({r['parameters']} params)"
        if r["error"]:
            lines.append((r["case"], _size(r), mlp, r["provider"], "error: " + r["error"][:60]) + ("",) * 4)
            continue
        lines.append((r["case"], _size(r), mlp, r["provider"], fmt(r["median_ms"]),
                      f"{fmt(r['min_ms'])}-{fmt(r['max_ms'])}", fmt(r["vs_eager"]), fmt(r["vs_compiled"]),
                      fmt(r["first_call_ms"] / 1e3)))
    return _table(header, lines)


def environment_line(env: dict, copy: dict | None) -> str:
    """The run's machine, software, load and settings, with the copy bandwidth once it is measured."""
    load = "/".join(f"{x:.1f}" for x in env["load_average_start"])
    measured = "" if copy is None else (f"; measured copy bandwidth {copy['gbps']:.1f} GB/s "
                                        f"(best {copy['best_gbps']:.1f}, {copy['nbytes'] / 1e6:.0f} MB buffers)")
    return (f"{env['device_name']} ({env['device_type']}, {env['threads']} threads of {env['cpu_count']} CPUs), "
            f"torch {env['torch']}, triton {env['triton']}, git {env['git_revision']}, {env['time_utc']}, "
            f"load average {load}{measured}" +
            "".join(f"; {name}={value}" for name, value in env.get("settings", {}).items()))


def markdown(result: dict) -> str:
    env, copy = result["environment"], result["copy_bandwidth"]
    parts = [f"# Benchmark: {env['device_name']}, {env['date']}", "", environment_line(env, copy), "",
             f"Command: `{result['command']}`", ""]
    if result.get("stopped_early"):
        parts += [f"**Partial run**: {result['stopped_early']}.", ""]
    if TARGETS.get(env["device_type"]):
        parts += ["## Targets", "", target_table(result["rows"], env["device_type"]), ""]
    host = host_table(result["rows"])
    if host.count("\n") > 1:
        parts += ["## Host overhead (tiny tensors)", "", host, ""]
    if result["train_step"]:
        parts += ["## Training step (forward, loss, backward, AdamW)", "", train_table(result["train_step"]), ""]
    parts += ["## Every op", "", op_table(result["rows"]), ""]
    return "\n".join(parts)


# ----------------------------------------------------------------------------- files
def _write_csv(path: Path, rows: Sequence[dict], fields: Sequence[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row[k] is None else row[k]) for k in fields})


def plot(result: dict, path: Path) -> None:
    """GB/s of compulsory traffic against traffic per call, one panel per op, one colour per provider."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if not r["error"]]
    ops = list(dict.fromkeys(r["op"] for r in rows))
    providers = list(dict.fromkeys(r["provider"] for r in rows))
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    cols = min(4, max(1, len(ops)))
    nrows = max(1, (len(ops) + cols - 1) // cols)  # one empty panel when no row was measured
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 2.9 * nrows), squeeze=False, sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "os^"
    copy = result["copy_bandwidth"]["gbps"]
    sizes = list(dict.fromkeys((r["batch"], r["features"]) for r in rows))
    for ax, op in zip(axes.flat, ops):
        for pi, provider in enumerate(providers):
            for di, dtype in enumerate(dtypes):
                for si, size in enumerate(sizes):  # one line per size, over the degrees
                    pts = sorted((r["traffic_bytes"] / 1e6, r["gbps"]) for r in rows
                                 if r["op"] == op and r["provider"] == provider and r["dtype"] == dtype
                                 and (r["batch"], r["features"]) == size)
                    if pts:
                        ax.plot(*zip(*pts), marker=markers[di % 3], ms=3, lw=0.6, color=colours[pi % len(colours)],
                                label=None if si else provider if len(dtypes) == 1 else f"{provider} {dtype}")
        ax.axhline(copy, color="k", ls="--", lw=0.8, label="copy bandwidth")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(op, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(ops):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("GB/s (compulsory)", fontsize=8)
    for ax in axes[-1, :]:
        ax.set_xlabel("MB per call", fontsize=8)
    legend = {}  # every provider once, whichever panel it appears in
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(legend.values(), legend.keys(), loc="lower right", fontsize=7)
    env = result["environment"]
    fig.suptitle(f"{env['device_name']}, {env['threads']} threads, {env['date']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def write(result: dict, out_dir: Path) -> list[Path]:
    """Writes ops.csv, train_step.csv, results.json, results.md and gbps.png into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / name for name in ("ops.csv", "train_step.csv", "results.json", "results.md", "gbps.png")]
    _write_csv(paths[0], result["rows"], ROW_FIELDS)
    _write_csv(paths[1], result["train_step"], TRAIN_FIELDS)
    partial = paths[2].with_name(paths[2].name + ".partial")  # a killed run leaves no half-written JSON
    partial.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(partial, paths[2])
    paths[3].write_text(markdown(result))
    plot(result, paths[4])
    return paths


def main(argv: list[str] | None = None) -> None:
    """Re-renders a run's files from its results.json (e.g. after a change to the tables)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=main.__doc__)
    parser.add_argument("results_json", type=Path)
    parser.add_argument("--out", type=Path, help="default: the folder of results_json")
    args = parser.parse_args(argv)
    result = json.loads(args.results_json.read_text())
    for path in write(result, args.out or args.results_json.parent):
        print(path)


if __name__ == "__main__":
    main()
