"""bezier_distill: Bezier Distillation (Feng & Yang, arXiv 2503.16562) on the fused ops of bezier_kernels.

Stages (see `bezier-distill --help` and bezier_distill.stages):
    teacher (1-RF) -> reflow (k-RF) -> guides (multi_teacher | fit) -> distill (student) -> sample
and `compare`, which runs them all for Bezier and k-RF distillation and measures the students.

Modules, one job each:
    config      dataclass configs, YAML/JSON loading, one-line errors naming the field
    data        source/target distributions (2-D toys, scikit-learn digits) and training pairs
    models      the MLP velocity network with a sinusoidal time embedding
    samplers    Euler / Heun ODE solvers (batched, no grad); the Bezier re-entry sampler of endpoint students
    timesteps   training-time sampling: uniform, U-shaped, grid
    teachers    trained runs as ODEs
    guides      guide makers (multi_teacher, fit via fit_bezier; degree 1 = a coupling)
    store       chunked safetensors datasets with a JSON manifest, resumable
    train       the training loop (one file, top to bottom)
    checkpoint  atomic safetensors + JSON checkpoints, exact resume
    distributed torchrun launches: DDP training, sharded generation, rank 0 writes
    stages/cli  the stages and the `bezier-distill` command
    metrics     energy distance, RBF MMD, sliced and exact W2, Frechet distance, straightness
    classifier  the digits classifier whose features the digits' Frechet distance uses (cached)
    compare     the comparison runner (`bezier-distill compare`): every method over seeds, with costs
    report      results.md rendered from results.json, and the comparison's figures (plots)
"""
from bezier_kernels._version import __version__  # one version number for the distribution

__all__ = ["__version__"]
