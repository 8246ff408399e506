// Torch glue shared by the CPU and CUDA op implementations: argument checks for direct op
// calls (user input is validated earlier, in Python) and tensor -> ControlPoints views.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <vector>

#include "bezier_common.h"

namespace bezier {

struct ControlPointsShape {
  int64_t batch, features;
  int degree;
};

ControlPointsShape check_control_points(const at::Tensor& x0, const at::Tensor& x1,
                                        const std::optional<at::Tensor>& guides,
                                        const at::Tensor& t);
// Distinct orders in 0..max_order, 1 to 3 of them.
std::vector<int> check_orders(at::IntArrayRef orders, int max_order);
Target parse_target(c10::string_view target);
Loss parse_loss(c10::string_view loss);
enum class Reduction : int { kMean = 0, kSum = 1, kNone = 2 };
Reduction parse_reduction(c10::string_view reduction);
// weight, when given: a floating [B] tensor on x0's device (any dtype and stride).
void check_weight(const std::optional<at::Tensor>& weight, const ControlPointsShape& shape, const at::Tensor& x0);
// pred must be [B, D] like x0 (dtype, device) with unit feature stride.
void check_pred(const at::Tensor& pred, const at::Tensor& x0, const ControlPointsShape& shape);
// fused_loss's arguments, checked (the control points, pred, weight, the names) and parsed, for both
// devices; mean_factor is the factor of every sample in the reduced loss before weights (1/B for a mean).
struct FusedLossArgs {
  ControlPointsShape shape;
  Target target;
  Loss loss;
  Reduction reduction;
  double mean_factor;
};
FusedLossArgs check_fused_loss(const at::Tensor& pred, const at::Tensor& x0, const at::Tensor& x1,
                               const std::optional<at::Tensor>& guides, const at::Tensor& t,
                               const std::optional<at::Tensor>& weight, c10::string_view target,
                               c10::string_view loss, c10::string_view reduction);
// loss_fwd's per-sample factors, [B] float64 contiguous on x0's device: row_weight m_b (sample
// b's factor in the reduced loss) and out_scale (the factor of r in the [B, D] output; null: 1).
struct LossFactors {
  const double* row_weight;
  const double* out_scale;
};
LossFactors check_loss_factors(const at::Tensor& row_weight, const std::optional<at::Tensor>& out_scale,
                               const at::Tensor& x0, const ControlPointsShape& shape);
// One [B, D] gradient per order, in x0's dtype and on its device; returned contiguous.
std::vector<at::Tensor> check_grads(at::TensorList grads, const at::Tensor& x0, const ControlPointsShape& shape,
                                    size_t count);

// path_bwd's point gradients: x0, x1 [B, D] and guides [B, n-1, D], contiguous; shape [0] when
// not asked for (and guides when n = 1).
struct PointGrads {
  at::Tensor x0, x1, guides;
};
PointGrads empty_point_grads(const at::Tensor& x0, const ControlPointsShape& shape, bool points_grad);

// loss_fwd's outputs: loss, scale, dloss_dt [B] in x0's accumulation type (float32, or float64
// for float64), resid [B, D] like x0.
struct LossTensors {
  at::Tensor loss, resid, scale, dt;
};
LossTensors empty_loss_outputs(const at::Tensor& x0, const ControlPointsShape& shape);

// fused_loss's outputs: value [] ("mean", "sum") or [B] ("none") in pred's dtype; out [B, D] like
// pred (dL/dpred for a unit upstream gradient, or r when residual); weight_grad [B] (dL/dweight_b
// for a unit upstream gradient: l_b, over B for a mean), scale [B] and dt ([B] when t_grad, else
// [0]) in the accumulation type.
struct FusedLossTensors {
  at::Tensor value, out, weight_grad, scale, dt;
};
FusedLossTensors empty_fused_loss_outputs(const at::Tensor& pred, const ControlPointsShape& shape, Reduction reduction,
                                          bool t_grad);

template <typename T>
ControlPoints<const T> control_points(const at::Tensor& x0, const at::Tensor& x1,
                                      const std::optional<at::Tensor>& guides, int degree) {
  ControlPoints<const T> P;
  P.x0 = x0.const_data_ptr<T>();
  P.x1 = x1.const_data_ptr<T>();
  P.x0_batch_stride = x0.stride(0);
  P.x1_batch_stride = x1.stride(0);
  P.guides = nullptr;
  P.guides_batch_stride = P.guides_point_stride = 0;
  if (degree > 1) {
    P.guides = guides->const_data_ptr<T>();
    P.guides_batch_stride = guides->stride(0);
    P.guides_point_stride = guides->stride(1);
  }
  P.degree = degree;
  return P;
}

// LossTensors' per-sample outputs as the kernels fill them.
template <typename Acc>
LossOutputs<Acc> loss_outputs(LossTensors& out, Loss kind, double huber_c, const LossFactors& factors) {
  return {kind, huber_c, out.loss.mutable_data_ptr<Acc>(), out.scale.mutable_data_ptr<Acc>(),
          out.dt.mutable_data_ptr<Acc>(), factors.row_weight};
}

// The layout of PointGrads (points_grad true) as ControlPoints.
template <typename T>
ControlPoints<T> gradient_points(PointGrads& grads, const ControlPointsShape& shape) {
  ControlPoints<T> G;
  G.x0 = grads.x0.mutable_data_ptr<T>();
  G.x1 = grads.x1.mutable_data_ptr<T>();
  G.guides = shape.degree > 1 ? grads.guides.mutable_data_ptr<T>() : nullptr;
  G.x0_batch_stride = G.x1_batch_stride = shape.features;
  G.guides_batch_stride = (shape.degree - 1) * shape.features;
  G.guides_point_stride = shape.features;
  G.degree = shape.degree;
  return G;
}

}  // namespace bezier
