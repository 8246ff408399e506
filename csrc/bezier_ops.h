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

}  // namespace bezier
