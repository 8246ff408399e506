"""Where a comparison keeps everything: one function per name, so no other module spells a run directory.

    OUT/config.yaml, results.json, results.md, figures/*.png
    OUT/seed-<s>/                  one seed's runs, its ledger.json (stage costs), evaluation.json (metrics)
                                   and samples.safetensors (every sampled model's samples, for the figures)
        teacher-<k>rf              the k-RF teacher (k = 1: train-teacher; k > 1: reflow of the (k-1)-RF one)
        coupling-<k>rf             the k-RF teacher's coupling, the data of k-RF distillation
        guides-<method>            a Bezier method's control points
        student-<method>           the distilled student
        guide-map-<method>         a Bezier student's guide map (its N-step sampler)
"""
from __future__ import annotations

from pathlib import Path

from ..config import MethodConfig

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
FIGURES = "figures"
LEDGER = "ledger.json"
EVALUATION = "evaluation.json"
SAMPLES = "samples.safetensors"


def seed_dir(out_dir: str | Path, seed: int) -> Path:
    return Path(out_dir) / f"seed-{seed}"


def method_slug(method: MethodConfig, index: int) -> str:
    """A directory-safe name of the index-th method: '00-bezier-fit-n-2-1-rf'."""
    text = "".join(c if c.isalnum() else "-" for c in method.name.lower())
    return f"{index:02d}-" + "-".join(part for part in text.split("-") if part)


def teacher_run(k: int) -> str:
    return f"teacher-{k}rf"


def coupling_data(k: int) -> str:
    return f"coupling-{k}rf"


def guides_data(slug: str) -> str:
    return f"guides-{slug}"


def student_run(slug: str) -> str:
    return f"student-{slug}"


def guide_map_run(slug: str) -> str:
    return f"guide-map-{slug}"


def teacher_model(k: int) -> str:
    """The name of the k-RF teacher in the result tables."""
    return f"{k}-RF teacher"
