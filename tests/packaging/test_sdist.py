"""The sdist carries every file the build needs, and one version number is seen everywhere.

(`make dist-check` goes further: it builds a wheel from the sdist in a fresh venv and smoke-tests it.)
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
from importlib.metadata import version
from pathlib import Path

import pytest

import bezier_distill
import bezier_kernels as bk

REPO = Path(__file__).resolve().parents[2]


def tracked(*patterns: str) -> set[str]:
    """The files of the checkout that git tracks, or would (untracked but not ignored), matching patterns."""
    done = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *patterns],
                          cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"not a git checkout: {done.stderr.strip()}")
    return {name for name in done.stdout.split() if (REPO / name).is_file()}


def test_the_sdist_holds_every_source_header_and_build_file(tmp_path):
    pytest.importorskip("build", reason="the sdist is built with the `build` package: pip install build (make setup)")
    tree = tmp_path / "tree"  # a clean copy: an old egg-info's SOURCES.txt in the checkout would add its files
    for name in tracked():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, tree / name)
    done = subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(tmp_path),
                           str(tree)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (sdist,) = tmp_path.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    needed = tracked("csrc", "bezier_kernels", "bezier_distill") | {
        "setup.py", "pyproject.toml", "MANIFEST.in", "CMakeLists.txt", "README.md"}
    assert {"csrc/bezier_cpu.h", "csrc/bezier_cuda.cuh", "csrc/bezier_cuda_forward.cu"} <= needed
    assert not needed - names, f"missing from the sdist: {sorted(needed - names)}"
    assert sdist.name == f"bezier_distill-{bk.__version__}.tar.gz"


def test_one_version_number_for_the_metadata_and_both_packages():
    assert version("bezier-distill") == bk.__version__ == bezier_distill.__version__
    literals = re.compile(r"^\s*(__version__|version)\s*=\s*['\"]", re.MULTILINE)
    written = sorted(name for name in tracked("*.py", "pyproject.toml", "setup.cfg")
                     if literals.search((REPO / name).read_text()))
    assert written == ["bezier_kernels/_version.py"], f"a version number is written in {written}"
