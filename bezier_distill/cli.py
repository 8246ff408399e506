"""The `bezier-distill` command: one subcommand per stage of the pipeline.

    bezier-distill train-teacher --config exp.yaml --out runs/rf1
    bezier-distill reflow        --config exp.yaml --teacher runs/rf1 --out runs/rf2
    bezier-distill make-guides   --config exp.yaml --teacher runs/rf1 --out runs/guides
    bezier-distill distill       --config exp.yaml --pairs runs/guides --out runs/student
    bezier-distill sample        --config exp.yaml --model runs/student --out runs/student-samples
    bezier-distill compare       --config exp.yaml --out runs/comparison   (every stage, every method, metrics)

--config is a YAML or JSON file with a section per stage (teacher, reflow, guides, distill, sample,
compare);
each subcommand reads its section (defaults for what is absent), then the input flags, then every
--set FIELD=VALUE (e.g. --set distill.train.steps=500). The run records the result as
OUT/config.yaml. Rerunning a command resumes it. User errors (config, paths, damaged or unreadable
files) print one line naming the field or file and what to do, and exit with status 2; an
interrupted run (Ctrl-C, SIGTERM) prints one line and exits with status 130. No traceback for them.

Launched by torchrun, each process joins the run's process group and runs the command as one rank:

    torchrun --nproc_per_node=4 -m bezier_distill distill --config exp.yaml --pairs runs/guides --out runs/student
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import warnings
from pathlib import Path

import torch

from . import distributed, stages
from .comparison import layout
from .comparison.report import verdict_lines
from .comparison.runner import run_comparison
from .config import apply_override, load_stage, read_file
from .errors import ConfigError, DamagedFileWarning

# subcommand -> (config section, stage function, help)
COMMANDS = {
    "train-teacher": ("teacher", stages.train_teacher, "train a 1-rectified-flow teacher on independent pairs"),
    "reflow": ("reflow", stages.reflow, "simulate a teacher's coupling and train the next rectified flow on it"),
    "make-guides": ("guides", stages.make_guides, "make Bezier control points with teachers (multi_teacher or fit)"),
    "distill": ("distill", stages.distill, "train a student along stored paths (guides or a coupling)"),
    "sample": ("sample", stages.sample, "sample a trained model and measure the samples against the target"),
    "compare": ("compare", run_comparison,
                "Bezier vs k-RF distillation over seeds: every stage, samples, metrics, tables and figures"),
}

# input flags: subcommand -> [(flag, config field, help)]; a repeatable flag fills a list field
OUTSIDE_TEACHER = [
    ("--teacher-model", "teacher_model", "an outside teacher instead of a run directory: package.module:function "
     "building its network from the feature shape (source and target: --set SECTION.teacher_data.source=...)"),
    ("--teacher-weights", "teacher_weights", "the outside teacher's state dict (.pt or .safetensors)")]
INPUT_FLAGS = {
    "reflow": [("--teacher", "teacher", "run directory of the teacher to reflow"), *OUTSIDE_TEACHER],
    "make-guides": [("--teacher", "teachers", "teacher run directory (repeat for multi_teacher, in guide order)"),
                    ("--endpoint-teacher", "endpoint_teacher", "run directory whose ODE end gives x1"),
                    *OUTSIDE_TEACHER],
    "distill": [("--pairs", "pairs", "dataset directory (make-guides output or a reflow's coupling/)"),
                ("--init-from", "init_from", "run directory whose weights start the student")],
    "sample": [("--model", "model", "run directory of the model to sample")],
}


SET_EXAMPLE = {"sample": "num_samples=100", "compare": "seeds=[0,1,2]"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bezier-distill", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (section, _, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--config", help=f"YAML or JSON config file (its '{section}' section is used)")
        sub.add_argument("--out", required=True, help="output directory (rerun with the same one to resume)")
        sub.add_argument("--device", choices=("cpu", "cuda"), default=None,
                         help="where to run (default: cuda when available, else cpu)")
        sub.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                         help=f"override a config field, e.g. {section}.{SET_EXAMPLE.get(section, 'train.steps=100')}")
        sub.add_argument("--no-progress", action="store_true", help="no progress bars")
        for flag, field, flag_help in INPUT_FLAGS.get(name, []):
            sub.add_argument(flag, dest=field, action="append" if field == "teachers" else "store", help=flag_help)
    return parser


def pick_device(requested: str | None) -> str:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available here (use --device cpu)")
    return requested or ("cuda" if torch.cuda.is_available() else "cpu")


def run(args: argparse.Namespace, device: torch.device | str | None = None) -> object:
    """Runs the subcommand of args on device (default: --device, else cuda when available)."""
    section, stage, _ = COMMANDS[args.command]
    data = read_file(args.config) if args.config else {}
    if data.get(section) is None:
        data[section] = {}
    for _, field, _ in INPUT_FLAGS.get(args.command, []):
        given = getattr(args, field)
        if given is not None and isinstance(data[section], dict):
            data[section][field] = given
    for assignment in args.set:
        apply_override(data, assignment)
    cfg = load_stage(section, data)
    device = pick_device(args.device) if device is None else device
    return stage(cfg, args.out, device=device, progress=not args.no_progress)


def report(command: str, out: str, result: object) -> str:
    if isinstance(result, stages.TrainResult):
        loss = f", last logged loss {result.log[-1]['loss']:.5f}" if result.log else ""
        return f"{command}: {out} trained to step {result.step}{loss}"
    if command == "compare":
        figures = "".join(f"\n  {Path(out) / path}" for path in result["figures"].values())
        md, data = Path(out) / layout.RESULTS_MD, Path(out) / layout.RESULTS_JSON
        verdict = "\n".join(verdict_lines(result))
        return f"{verdict}\n{command}: tables in {md}, data in {data}" + (
            f"\nfigures:{figures}" if figures else "")
    if command == "make-guides":
        return (f"{command}: {out} holds {result['num_samples']} {result['kind']} paths of degree {result['degree']} "
                f"({result['evaluations_per_sample']} teacher evaluations per pair)")
    return f"{command}: {out}\n" + json.dumps(result, indent=1)


def _terminated(signum, frame):
    raise KeyboardInterrupt  # a SIGTERM (e.g. from a scheduler) stops the run like Ctrl-C: a one-line message


def _user_facing(name: str, error: BaseException) -> tuple[str, int] | None:
    """(The one-line message, exit status) of a failure the user can act on; None for a programming error."""
    if isinstance(error, ConfigError):  # bad config values and paths, damaged or unreadable files
        return f"{name}: error: {error}", 2
    if isinstance(error, KeyboardInterrupt):
        return f"{name}: interrupted; rerun the same command to resume", 130
    if isinstance(error, OSError) and error.strerror:  # the file system: no space left, no permission, ...
        where = f": '{error.filename}'" if error.filename else ""
        return f"{name}: error: {error.strerror}{where}", 2
    return None


def main(argv: list[str] | None = None) -> int:
    """Runs one subcommand; every user-facing failure is one line on stderr (no traceback), warnings too."""
    args = build_parser().parse_args(argv)
    name = f"bezier-distill {args.command}"

    def show_warning(message, category, *where, **kwargs):
        if issubclass(category, DamagedFileWarning):
            print(f"{name}: warning: {message}", file=sys.stderr)
        else:
            python_warning(message, category, *where, **kwargs)

    handles_sigterm = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if handles_sigterm else None
    try:
        with warnings.catch_warnings():
            python_warning, warnings.showwarning = warnings.showwarning, show_warning
            with distributed.launch(pick_device(args.device)) as device:  # one rank of a torchrun launch, or alone
                world = distributed.world()
                if world.size > 1:
                    name += f" (rank {world.rank} of {world.size})"
                result = run(args, device)
                if world.main:
                    print(report(args.command, args.out, result))
    except (Exception, KeyboardInterrupt) as error:
        failure = _user_facing(name, error)
        if failure is None:
            raise
        print(failure[0], file=sys.stderr)
        return failure[1]
    finally:
        if handles_sigterm:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
