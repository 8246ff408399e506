"""Builds the bezier_kernels._C extension: C++ CPU kernels (and CUDA kernels when available).

    pip install --no-build-isolation -e .     # or without -e

Environment:
    BEZIER_KERNELS_NO_EXTENSION=1   install the pure-PyTorch package only
    MAX_JOBS=N                      parallel compile jobs (ninja)
"""
import os

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join("csrc")


def extensions():
    if os.environ.get("BEZIER_KERNELS_NO_EXTENSION") == "1":
        return [], {}
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    sources = [os.path.join(CSRC, name) for name in ("module.cpp", "bezier_ops.cpp")]
    cxx_flags = ["-O3", "-g0", "-fopenmp", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    ext = CppExtension(
        "bezier_kernels._C",
        sources,
        include_dirs=[os.path.join(ROOT, CSRC)],
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=["-fopenmp"],
    )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
