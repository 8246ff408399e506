// Host interface of the CUDA kernels (bezier_cuda_*.cu): torch-free, needs only the CUDA
// runtime. Same operations and layouts as the CPU kernels of bezier_cpu.h; T is float, double,
// __half or __nv_bfloat16 (float32 accumulation for the half types). Every function checks its
// launches and returns the first error (cudaSuccess otherwise); work is queued on launch.stream.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <functional>

#include "bezier_common.h"
#include "bezier_cuda_tiles.h"

namespace bezier {
namespace gpu {

struct Launch {
  cudaStream_t stream;
  int multiprocessors;  // of the device: sizes the grid
};

// Device scratch for cross-block reductions: `count` float64, alive until the queued work is
// done (a stream-ordered allocator such as PyTorch's caching allocator).
using Workspace = std::function<double*(int64_t count)>;

// out[j] ([B, D] contiguous) = the orders[j] derivative of the paths at t, j < count (1..3).
template <typename T>
cudaError_t path_forward(const ControlPoints<const T>& P, Column t, int64_t B, int64_t D, const int* orders,
                         int count, T* const* out, const Launch& launch);

// Backward of path_forward for grad[j] ([B, D] contiguous): grad_points (contiguous gradient
// layout, or null) gets dL/dP_i; grad_t ([B], or none) gets dL/dt.
template <typename T>
cudaError_t path_backward(const ControlPoints<const T>& P, Column t, int64_t B, int64_t D, const int* orders,
                          int count, const T* const* grad, const ControlPoints<T>* grad_points, OutColumn grad_t,
                          const Workspace& workspace, const Launch& launch);

// Fused loss forward (bezier_cpu.h loss_forward + loss_finish): writes out_scale[b] * r (r when
// out_scale is null) to resid ([B, D] contiguous) and each sample's loss, scale and dloss/dt to out.
template <typename T>
cudaError_t loss_forward(const ControlPoints<const T>& P, Column t, int64_t B, int64_t D, Target target,
                         const T* pred, int64_t pred_batch_stride, const double* out_scale, T* resid,
                         const LossOutputs<acc_t<T>>& out, const Workspace& workspace, const Launch& launch);

// The whole fused loss (the fused_loss op): writes dL/dpred for a unit upstream gradient (r when
// !o.gradient) to out ([B, D] contiguous) and o's per-sample outputs, and value: o.value[b] = m_b l_b
// (o.rowwise) or o.value[0] = sum_b m_b l_b (empty_total for B = 0). Launches: 1 kernel
// ("none"), 2 (a reduction), plus a finish kernel and, for pseudo-Huber's dL/dpred, a scaling
// kernel when a row spans several tiles.
template <typename T>
cudaError_t fused_loss(const ControlPoints<const T>& P, Column t, int64_t B, int64_t D, Target target,
                       const T* pred, int64_t pred_batch_stride, T* out, const FusedLossOutputs<T>& o,
                       double empty_total, const Workspace& workspace, const Launch& launch);

}  // namespace gpu
}  // namespace bezier
