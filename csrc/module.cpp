// The Python module bezier_kernels._C: loading it registers the ops of bezier_ops.cpp (and the
// CUDA kernels when built with them); build_info() reports how the extension was built;
// call_shape() is the fast path of the Python input checks (bezier_kernels/_validate.py) and
// fused_loss_value() the fast path of bezier_distill_loss's call of its backend's fused loss.
#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/extension.h>

#include <optional>
#include <string>
#include <tuple>

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

using FusedLoss = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, const at::Tensor&,
    const std::optional<at::Tensor>&, c10::string_view, c10::string_view, double, c10::string_view, bool, bool);

// The fused-loss op of a backend ("cpp", "cuda": bezier_kernels::fused_loss; "triton":
// bezier_kernels::triton_fused_loss, registered from Python), found on first use; none when unknown.
std::optional<c10::TypedOperatorHandle<FusedLoss>> loss_op(const std::string& backend) {
  static std::optional<c10::TypedOperatorHandle<FusedLoss>> compiled, triton;
  if (backend != "triton" && backend != "cpp" && backend != "cuda") return std::nullopt;
  std::optional<c10::TypedOperatorHandle<FusedLoss>>& slot = backend == "triton" ? triton : compiled;
  if (!slot) {
    const auto handle = c10::Dispatcher::singleton().findSchema(
        {backend == "triton" ? "bezier_kernels::triton_fused_loss" : "bezier_kernels::fused_loss", ""});
    if (handle) slot = handle->typed<FusedLoss>();
  }
  return slot;
}

bool unit_features(const at::Tensor& x) { return x.size(-1) <= 1 || x.stride(-1) == 1; }

// The value of bezier_distill_loss for a call the Python checks accepted, on `backend`, when every
// tensor is already flat (pred, x0, x1 [B, D] and guides [B, n-1, D], unit feature stride; else None,
// and the caller reshapes): residual and t_grad from the grad mode and requires_grad as in
// bezier_kernels/functional.py, the op called through the dispatcher (autograd, dispatch modes and
// functorch as for any op call; None under a TorchFunctionMode, which only a Python call reaches),
// and only the value handed back to Python: no argument parsing against the schema, no Python
// objects for the other four outputs.
py::object fused_loss_value(const std::string& backend, py::handle pred_h, py::handle x0_h, py::handle x1_h,
                            py::handle guides_h, py::handle t_h, py::handle weight_h, const std::string& target,
                            const std::string& loss, double huber_c, const std::string& reduction) {
  const at::Tensor* pred = exact_tensor(pred_h);
  const at::Tensor* x0 = exact_tensor(x0_h);
  const at::Tensor* x1 = exact_tensor(x1_h);
  const at::Tensor* t = exact_tensor(t_h);
  const at::Tensor* guides = guides_h.is_none() ? nullptr : exact_tensor(guides_h);
  const at::Tensor* weight = weight_h.is_none() ? nullptr : exact_tensor(weight_h);
  // a TorchFunctionMode would not see an op called from here: such calls take the Python call
  if (!pred || !x0 || !x1 || !t || (!guides_h.is_none() && !guides) || (!weight_h.is_none() && !weight) ||
      at::impl::torch_function_mode_enabled())
    return py::none();
  if (x0->dim() != 2 || !unit_features(*x0) || !unit_features(*x1) || !unit_features(*pred) ||
      (guides && (guides->dim() != 3 || (guides->size(1) > 0 && !unit_features(*guides)))))
    return py::none();
  const auto op = loss_op(backend);
  if (!op) return py::none();
  const bool grad = c10::GradMode::is_enabled();
  const bool residual = grad && (x0->requires_grad() || x1->requires_grad() || (guides && guides->requires_grad()));
  const bool t_grad = grad && t->requires_grad();
  const std::optional<at::Tensor> g = guides ? std::optional<at::Tensor>(*guides) : std::nullopt;
  const std::optional<at::Tensor> w = weight ? std::optional<at::Tensor>(*weight) : std::nullopt;
  at::Tensor value;
  {
    py::gil_scoped_release no_gil;  // as for an op called from Python (a Python kernel takes it back)
    value = std::get<0>(op->call(*pred, *x0, *x1, g, *t, w, target, loss, huber_c, reduction, residual, t_grad));
  }
  return py::cast(value);
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
  m.def("fused_loss_value", &fused_loss_value,
        "bezier_distill_loss's value from its backend's fused loss for flat, checked tensors, else None.",
        py::arg("backend"), py::arg("pred"), py::arg("x0"), py::arg("x1"), py::arg("guides"), py::arg("t"),
        py::arg("weight"), py::arg("target"), py::arg("loss"), py::arg("huber_c"), py::arg("reduction"));
}
