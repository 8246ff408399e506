// The Python module bezier_kernels._C: loading it registers the ops of bezier_ops.cpp (and the
// CUDA kernels when built with them); build_info() reports how the extension was built.
#include <torch/extension.h>

#include "bezier_common.h"

namespace {

py::dict build_info() {
  py::dict info;
#ifdef _OPENMP
  info["openmp"] = true;
#else
  info["openmp"] = false;
#endif
#ifdef BEZIER_WITH_CUDA
  info["cuda"] = true;
#else
  info["cuda"] = false;
#endif
  info["max_degree"] = bezier::kMaxDegree;
  return info;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("build_info", &build_info, "How the extension was built: OpenMP, CUDA, max degree.");
}
