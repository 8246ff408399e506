"""bezier_distill: Bezier Distillation (Feng & Yang, arXiv 2503.16562) on the fused ops of bezier_kernels.

Stages (see `bezier-distill --help` and bezier_distill.stages):
    teacher (1-RF) -> reflow (k-RF) -> guides (multi_teacher | fit) -> distill (student) -> sample
and `compare`, which runs them all for every method and measures the students.

Modules, leaves first (imports run one way: tests/layout/test_imports.py):
    errors       ConfigError and the one way to name a bad field or a changed setting
    config/      dataclass configs (*Config): sections, stages, comparison; the YAML/JSON loader
    files        atomic writes, JSON
    distributed  torchrun launches: DDP training, sharded generation, rank 0 writes
    data         source/target distributions (2-D toys, scikit-learn digits) and training pairs
    store        chunked safetensors datasets with a JSON manifest, resumable
    models       the MLP velocity network with a sinusoidal time embedding
    checkpoint   atomic safetensors + JSON checkpoints, exact resume
    samplers     Euler / Heun ODE solvers (batched, no grad); the Bezier re-entry sampler
    timesteps    training-time sampling: uniform, U-shaped, grid
    teachers     trained runs as ODEs
    guides       guide makers (multi_teacher, fit via fit_bezier; degree 1 = a coupling)
    train        the training loop (one file, top to bottom)
    evaluation/  metrics, the digits classifier, plots
    stages       one function per CLI stage, and the checks a stage runs before it starts
    comparison/  the comparison runner: layout, typed plan, evaluation, figures, report
    cli          the `bezier-distill` command
"""
__version__ = "0.1.0"
