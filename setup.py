"""Builds the bezier_kernels._C extension: C++ CPU kernels, and CUDA kernels when available.

    pip install --no-build-isolation -e .     # or without -e

The CUDA kernels (csrc/*.cu) join when torch was built with CUDA and nvcc is found (CUDA_HOME);
otherwise the extension is CPU-only and available_backends() says why "cuda" is missing.

Environment:
    BEZIER_KERNELS_NO_EXTENSION=1   install the pure-PyTorch package only
    BEZIER_KERNELS_NO_CUDA=1        build the CPU kernels only, even where CUDA is available
    TORCH_CUDA_ARCH_LIST            CUDA architectures, e.g. "8.0;9.0" (default "8.0;9.0+PTX":
                                    A100/RTX 30-40 and H100 binaries, PTX for newer GPUs)
    MAX_JOBS=N                      parallel compile jobs (ninja)
"""
import glob
import os

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = "csrc"
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"


def with_cuda() -> bool:
    """torch has CUDA and nvcc is found, unless BEZIER_KERNELS_NO_CUDA=1."""
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    return os.environ.get("BEZIER_KERNELS_NO_CUDA") != "1" and torch.version.cuda is not None and CUDA_HOME is not None


def cuda_extension(sources: list, cxx_flags: list):
    """The extension with the CUDA kernels and their torch glue (build_info() reports cuda=True)."""
    from torch.utils.cpp_extension import CUDAExtension

    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS)  # read by BuildExtension
    cuda_sources = [os.path.join(CSRC, "bezier_cuda_ops.cpp")] + sorted(glob.glob(os.path.join(CSRC, "*.cu")))
    return CUDAExtension(
        "bezier_kernels._C",
        sources + cuda_sources,
        include_dirs=[os.path.join(ROOT, CSRC)],
        extra_compile_args={"cxx": cxx_flags + ["-DBEZIER_WITH_CUDA"], "nvcc": ["-O3", "-lineinfo"]},
        extra_link_args=["-fopenmp"],
    )


def extensions():
    if os.environ.get("BEZIER_KERNELS_NO_EXTENSION") == "1":
        return [], {}
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    sources = [os.path.join(CSRC, name) for name in ("module.cpp", "bezier_ops.cpp", "bezier_autograd.cpp")]
    cxx_flags = ["-O3", "-g0", "-fopenmp", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    ext = CppExtension(
        "bezier_kernels._C",
        sources,
        include_dirs=[os.path.join(ROOT, CSRC)],
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=["-fopenmp"],
    )
    if with_cuda():
        ext = cuda_extension(sources, cxx_flags)
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
