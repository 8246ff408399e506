// Torch glue of the CUDA kernels (bezier_cuda_*.cu, through bezier_cuda.h): the CUDA
// implementations of the ops defined in bezier_ops.cpp, with the checks and output layouts
// shared with the CPU implementations (bezier_ops.h). Kernels run on the current stream of the
// inputs' device; every launch error raises.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>
#include <type_traits>
#include <vector>

#include "bezier_cuda.h"
#include "bezier_ops.h"

namespace bezier {
namespace {

// The CUDA type with the same bits as a PyTorch scalar type.
template <typename T>
struct CudaType {
  using type = T;
};
template <>
struct CudaType<c10::Half> {
  using type = __half;
};
template <>
struct CudaType<c10::BFloat16> {
  using type = __nv_bfloat16;
};
template <typename T>
using cuda_t = typename CudaType<T>::type;

template <typename To, typename From>
ControlPoints<To> retype(const ControlPoints<From>& P) {
  return {reinterpret_cast<To*>(P.x0), reinterpret_cast<To*>(P.x1), reinterpret_cast<To*>(P.guides),
          P.x0_batch_stride, P.x1_batch_stride, P.guides_batch_stride, P.guides_point_stride, P.degree};
}

// The current stream and the multiprocessor count of the current device (set by a CUDAGuard).
gpu::Launch current_launch() {
  int multiprocessors = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, c10::cuda::current_device()));
  return {c10::cuda::getCurrentCUDAStream().stream(), multiprocessors};
}

// A [B] tensor (t, the loss's weights) as the kernels read it: float32 or float64 in place, any
// stride; the half types through a float32 copy held by `storage` (one more kernel).
gpu::Column device_column(const at::Tensor& v, at::Tensor& storage) {
  if (v.scalar_type() == at::kDouble) return {nullptr, v.const_data_ptr<double>(), v.stride(0)};
  const at::Tensor& f = v.scalar_type() == at::kFloat ? v : (storage = v.to(at::kFloat));
  return {f.const_data_ptr<float>(), nullptr, f.stride(0)};
}

// Reduction scratch on x0's device, held by `storage` until the op returns (the caching
// allocator orders any reuse after the queued kernels).
gpu::Workspace workspace_for(const at::Tensor& x0, at::Tensor& storage) {
  return [&x0, &storage](int64_t count) {
    storage = at::empty({count}, x0.options().dtype(at::kDouble));
    return storage.mutable_data_ptr<double>();
  };
}

std::vector<at::Tensor> path_fwd_cuda(const at::Tensor& x0, const at::Tensor& x1,
                                      const std::optional<at::Tensor>& guides, const at::Tensor& t,
                                      at::IntArrayRef orders) {
  const auto shape = check_control_points(x0, x1, guides, t);
  const auto ords = check_orders(orders, 2);
  const c10::cuda::CUDAGuard device_guard(x0.device());
  std::vector<at::Tensor> out;
  for (size_t k = 0; k < ords.size(); ++k) out.push_back(at::empty({shape.batch, shape.features}, x0.options()));
  at::Tensor t_storage;
  const gpu::Column times = device_column(t, t_storage);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x0.scalar_type(), "bezier_path_fwd_cuda", [&] {
    using T = cuda_t<scalar_t>;
    T* out_ptrs[3];
    for (size_t k = 0; k < out.size(); ++k) out_ptrs[k] = reinterpret_cast<T*>(out[k].mutable_data_ptr<scalar_t>());
    C10_CUDA_CHECK(gpu::path_forward<T>(retype<const T>(control_points<scalar_t>(x0, x1, guides, shape.degree)), times,
                                        shape.batch, shape.features, ords.data(), static_cast<int>(ords.size()),
                                        out_ptrs, current_launch()));
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> path_bwd_cuda(
    at::TensorList grads, const at::Tensor& x0, const at::Tensor& x1, const std::optional<at::Tensor>& guides,
    const at::Tensor& t, at::IntArrayRef orders, bool points_grad, bool t_grad) {
  const auto shape = check_control_points(x0, x1, guides, t);
  const auto ords = check_orders(orders, 2);
  const std::vector<at::Tensor> g = check_grads(grads, x0, shape, ords.size());
  const c10::cuda::CUDAGuard device_guard(x0.device());
  PointGrads point_grads = empty_point_grads(x0, shape, points_grad);
  // dL/dt written in t's dtype (float64 for the half types, cast after)
  const bool t_in_place = t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble;
  at::Tensor gt = at::empty({t_grad ? shape.batch : 0}, t.options().dtype(t_in_place ? t.scalar_type() : at::kDouble));
  gpu::OutColumn grad_t;
  if (t_grad && gt.scalar_type() == at::kFloat) grad_t.f32 = gt.mutable_data_ptr<float>();
  if (t_grad && gt.scalar_type() == at::kDouble) grad_t.f64 = gt.mutable_data_ptr<double>();
  at::Tensor t_storage, scratch;
  const gpu::Column times = device_column(t, t_storage);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x0.scalar_type(), "bezier_path_bwd_cuda", [&] {
    using T = cuda_t<scalar_t>;
    ControlPoints<T> GP{};
    if (points_grad) GP = retype<T>(gradient_points<scalar_t>(point_grads, shape));
    const T* grad_ptrs[3];
    for (size_t k = 0; k < g.size(); ++k) grad_ptrs[k] = reinterpret_cast<const T*>(g[k].const_data_ptr<scalar_t>());
    C10_CUDA_CHECK(gpu::path_backward<T>(
        retype<const T>(control_points<scalar_t>(x0, x1, guides, shape.degree)), times, shape.batch, shape.features,
        ords.data(), static_cast<int>(ords.size()), grad_ptrs, points_grad ? &GP : nullptr,
        grad_t, workspace_for(x0, scratch), current_launch()));
  });
  return {point_grads.x0, point_grads.x1, point_grads.guides, t_in_place ? gt : gt.to(t.scalar_type())};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> loss_fwd_cuda(
    const at::Tensor& pred, const at::Tensor& x0, const at::Tensor& x1, const std::optional<at::Tensor>& guides,
    const at::Tensor& t, const at::Tensor& row_weight, const std::optional<at::Tensor>& out_scale,
    c10::string_view target, c10::string_view loss, double huber_c) {
  const auto shape = check_control_points(x0, x1, guides, t);
  check_pred(pred, x0, shape);
  const LossFactors factors = check_loss_factors(row_weight, out_scale, x0, shape);
  const Target tgt = parse_target(target);
  const Loss kind = parse_loss(loss);
  const c10::cuda::CUDAGuard device_guard(x0.device());
  LossTensors out = empty_loss_outputs(x0, shape);
  at::Tensor t_storage, scratch;
  const gpu::Column times = device_column(t, t_storage);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x0.scalar_type(), "bezier_loss_fwd_cuda", [&] {
    using T = cuda_t<scalar_t>;
    using Acc = at::opmath_type<scalar_t>;
    static_assert(std::is_same_v<Acc, gpu::acc_t<T>>, "per-sample outputs in the accumulation type");
    C10_CUDA_CHECK(gpu::loss_forward<T>(
        retype<const T>(control_points<scalar_t>(x0, x1, guides, shape.degree)), times, shape.batch, shape.features,
        tgt, reinterpret_cast<const T*>(pred.const_data_ptr<scalar_t>()), pred.stride(0), factors.out_scale,
        reinterpret_cast<T*>(out.resid.mutable_data_ptr<scalar_t>()), loss_outputs<Acc>(out, kind, huber_c, factors),
        workspace_for(x0, scratch), current_launch()));
  });
  return {out.loss, out.resid, out.scale, out.dt};
}

// The whole loss (schema and outputs: FusedLossTensors): gpu::fused_loss reads t and the weights in
// place and computes every per-sample factor in its kernels; only the outputs and the scratch are
// allocated here.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_loss_cuda(
    const at::Tensor& pred, const at::Tensor& x0, const at::Tensor& x1, const std::optional<at::Tensor>& guides,
    const at::Tensor& t, const std::optional<at::Tensor>& weight, c10::string_view target, c10::string_view loss,
    double huber_c, c10::string_view reduction, bool residual, bool t_grad) {
  const FusedLossArgs args = check_fused_loss(pred, x0, x1, guides, t, weight, target, loss, reduction);
  const ControlPointsShape shape = args.shape;
  const c10::cuda::CUDAGuard device_guard(x0.device());
  FusedLossTensors o = empty_fused_loss_outputs(pred, shape, args.reduction, t_grad);
  at::Tensor t_storage, weight_storage, scratch;
  const gpu::Column times = device_column(t, t_storage);
  const gpu::Column weights = weight.has_value() ? device_column(*weight, weight_storage) : gpu::Column{};
  const double empty_total = args.reduction == Reduction::kMean ? std::numeric_limits<double>::quiet_NaN() : 0.0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x0.scalar_type(), "bezier_fused_loss_cuda", [&] {
    using T = cuda_t<scalar_t>;
    using Acc = at::opmath_type<scalar_t>;
    static_assert(std::is_same_v<Acc, gpu::acc_t<T>>, "per-sample outputs in the accumulation type");
    const gpu::FusedLossOutputs<T> outputs{args.loss,
                                           huber_c,
                                           weights,
                                           args.mean_factor,
                                           !residual,
                                           args.reduction == Reduction::kNone,
                                           reinterpret_cast<T*>(o.value.mutable_data_ptr<scalar_t>()),
                                           o.weight_grad.mutable_data_ptr<Acc>(),
                                           o.scale.mutable_data_ptr<Acc>(),
                                           t_grad ? o.dt.mutable_data_ptr<Acc>() : nullptr};
    C10_CUDA_CHECK(gpu::fused_loss<T>(retype<const T>(control_points<scalar_t>(x0, x1, guides, shape.degree)), times,
                                      shape.batch, shape.features, args.target,
                                      reinterpret_cast<const T*>(pred.const_data_ptr<scalar_t>()), pred.stride(0),
                                      reinterpret_cast<T*>(o.out.mutable_data_ptr<scalar_t>()), outputs, empty_total,
                                      workspace_for(x0, scratch), current_launch()));
  });
  return {o.value, o.out, o.weight_grad, o.scale, o.dt};
}

}  // namespace
}  // namespace bezier

TORCH_LIBRARY_IMPL(bezier_kernels, CUDA, m) {
  m.impl("path_fwd", &bezier::path_fwd_cuda);
  m.impl("path_bwd", &bezier::path_bwd_cuda);
  m.impl("loss_fwd", &bezier::loss_fwd_cuda);
  m.impl("fused_loss", &bezier::fused_loss_cuda);
}
