// The Python module bezier_kernels._C: loading it registers the ops of bezier_ops.cpp (and the
// CUDA kernels when built with them); build_info() reports how the extension was built;
// call_shape() is the fast path of the Python input checks (bezier_kernels/_validate.py).
#include <torch/csrc/autograd/python_variable.h>
#include <torch/extension.h>

#include "bezier_common.h"

namespace {

// A plain torch.Tensor or nn.Parameter (not another subclass, which may override what the checks read),
// or nullptr.
const at::Tensor* exact_tensor(py::handle h) {
  return THPVariable_CheckExact(h.ptr()) ? &THPVariable_Unpack(h.ptr()) : nullptr;
}

// (B, F, n) of a valid call of bezier (pred, weight None) or bezier_distill_loss on plain tensors:
// x0, x1 [B, *F] floating of one dtype; guides None or [B, n-1, *F] with n <= max_degree; t floating
// [B]; pred like x0; weight None or floating [B]; all on x0's device. None for anything else, which
// the Python checks then reject (or accept: other tensor types) with their messages. One call
// instead of ~20 attribute reads in Python, a few microseconds per op call.
py::object call_shape(py::handle x0_h, py::handle x1_h, py::handle t_h, py::handle guides_h, py::handle pred_h,
                      py::handle weight_h, int64_t max_degree) {
  const at::Tensor* x0 = exact_tensor(x0_h);
  const at::Tensor* x1 = exact_tensor(x1_h);
  const at::Tensor* t = exact_tensor(t_h);
  if (!x0 || !x1 || !t) return py::none();
  const auto sizes = x0->sizes();
  const auto dtype = x0->scalar_type();
  const auto device = x0->device();
  if (!at::isFloatingType(dtype) || sizes.empty() || x1->scalar_type() != dtype || x1->sizes() != sizes ||
      x1->device() != device || !at::isFloatingType(t->scalar_type()) || t->dim() != 1 || t->size(0) != sizes[0] ||
      t->device() != device)
    return py::none();
  int64_t degree = 1;
  if (!guides_h.is_none()) {
    const at::Tensor* g = exact_tensor(guides_h);
    if (!g || g->scalar_type() != dtype || g->dim() != x0->dim() + 1 || g->size(0) != sizes[0] ||
        g->sizes().slice(2) != sizes.slice(1) || g->size(1) + 1 > max_degree || g->device() != device)
      return py::none();
    degree = g->size(1) + 1;
  }
  if (!pred_h.is_none()) {
    const at::Tensor* pred = exact_tensor(pred_h);
    if (!pred || pred->scalar_type() != dtype || pred->sizes() != sizes || pred->device() != device)
      return py::none();
  }
  if (!weight_h.is_none()) {
    const at::Tensor* w = exact_tensor(weight_h);
    if (!w || !at::isFloatingType(w->scalar_type()) || w->dim() != 1 || w->size(0) != sizes[0] ||
        w->device() != device)
      return py::none();
  }
  py::tuple features(sizes.size() - 1);
  for (size_t i = 1; i < sizes.size(); ++i) features[i - 1] = py::int_(sizes[i]);
  return py::make_tuple(sizes[0], features, degree);
}

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
  m.def("call_shape", &call_shape, "(B, F, n) of a valid op call on plain tensors, else None (the checks' fast path).",
        py::arg("x0"), py::arg("x1"), py::arg("t"), py::arg("guides"), py::arg("pred"), py::arg("weight"),
        py::arg("max_degree"));
}
