"""The installed distribution's smoke test (make dist-check runs it in a fresh venv, outside the source tree).

Checks that the packages come from site-packages, that the wheel's C++ extension loads and agrees with
the PyTorch reference, that one version number is seen everywhere, and that the console script runs a
tiny teacher and samples it.
"""
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

import torch

import bezier_distill
import bezier_kernels as bk

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    for package in (bk, bezier_distill):
        assert Path(package.__file__).resolve().parent != REPO / package.__name__, f"{package.__name__} from the tree"
    info = bk.available_backends()["cpp"]
    assert info.available, f"the wheel's C++ extension does not load: {info.reason}"
    generator = torch.Generator().manual_seed(0)
    x0, x1, t = torch.randn(64, 3, generator=generator), torch.randn(64, 3, generator=generator), torch.rand(64)
    guides = torch.randn(64, 2, 3, generator=generator)
    fast = bk.bezier(x0, x1, t, guides, orders=(0, 1), backend="cpp")
    reference = bk.bezier(x0, x1, t, guides, orders=(0, 1), backend="torch")
    for a, b in zip(fast, reference):
        torch.testing.assert_close(a, b)
    assert version("bezier-distill") == bk.__version__ == bezier_distill.__version__, "versions differ"
    with tempfile.TemporaryDirectory() as tmp:
        tiny = ["--no-progress", "--device", "cpu"]
        teacher = ["train-teacher", "--out", f"{tmp}/rf1", "--set", "teacher.train.steps=20",
                   "--set", "teacher.train.batch_size=64", "--set", "teacher.model.width=16"]
        sample = ["sample", "--model", f"{tmp}/rf1", "--out", f"{tmp}/samples", "--set", "sample.num_samples=256",
                  "--set", "sample.plot=false"]
        for args in (teacher, sample):
            subprocess.run([str(Path(sys.executable).parent / "bezier-distill"), *args, *tiny], check=True)
    print(f"smoke test passed: bezier-distill {bk.__version__}, cpp backend ({info.reason or 'loaded'}), "
          f"from {Path(bk.__file__).parent}")


if __name__ == "__main__":
    main()
