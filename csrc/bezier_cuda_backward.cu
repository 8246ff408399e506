// CUDA backward of path evaluation: gradients of the control points and of t. The per-thread
// work is path_backward_thread (bezier_cuda_tiles.h); a sample's dL/dt is summed over its tile's
// threads (group_sum) and, when a row spans several tiles, over its tiles by a second kernel.
#include "bezier_cuda.cuh"

namespace bezier {
namespace gpu {
namespace {

// orders holds the K orders' weights when grad_points.x0 is set, then the K orders + 1 when
// grad_t is set. Writes grad_t[b] when a row is one tile, else t_partial[tile].
// At least 2 blocks per SM allows 128 registers: ptxas' default target spills the half types.
template <typename T, int K, int V>
__global__ void __launch_bounds__(kThreads, 2)
    path_backward_kernel(const ControlPoints<const T> P, const Column t, const RowTiling tiling,
                         const BinomialRows rows, const OrderList orders, const RowPointers<const T> grad,
                         const ControlPoints<T> grad_points, double* t_partial, const OutColumn grad_t) {
  using Acc = acc_t<T>;
  const ThreadTile me = thread_tile(tiling);
  const Acc* w = stage_weights<Acc>(tiling, me, rows, orders, t);
  const Acc* w_points = grad_points.x0 ? w : nullptr;
  const Acc* w_next = grad_t ? w + (w_points ? K * (P.degree + 1) : 0) : nullptr;
  Acc dt[1] = {Acc(0)};
  if (me.active) dt[0] = path_backward_thread<T, K, V>(tiling, me.tile, me.lane, P, w_points, w_next, grad.p, grad_points);
  if (!grad_t) return;
  group_sum(dt, tiling.group);
  if (me.active && me.lane == 0) {
    if (tiling.tiles_per_row == 1)
      grad_t.store(tiling.sample(me.tile), static_cast<double>(dt[0]));
    else
      t_partial[me.tile] = static_cast<double>(dt[0]);
  }
}

__global__ void __launch_bounds__(kThreads)
    sum_tiles_kernel(const double* partial, int64_t batch, int64_t tiles_per_row, const OutColumn out) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (b < batch) out.store(b, sum_tiles(partial, b, tiles_per_row));
}

}  // namespace

template <typename T>
cudaError_t path_backward(const ControlPoints<const T>& P, Column t, int64_t B, int64_t D, const int* orders,
                          int count, const T* const* grad, const ControlPoints<T>* grad_points, OutColumn grad_t,
                          const Workspace& workspace, const Launch& launch) {
  if (count < 1 || count > 3) return cudaErrorInvalidValue;
  const bool points = grad_points != nullptr && D > 0;
  if (B == 0 || (!points && !grad_t)) return cudaSuccess;
  OrderList list;
  if (points)
    for (int j = 0; j < count; ++j) list.push(orders[j]);
  if (grad_t)
    for (int j = 0; j < count; ++j) list.push(orders[j] + 1);
  RowPointers<const T> grad_rows{};
  ControlPoints<T> gp{};
  bool aligned = points_aligned(P, B);
  for (int j = 0; j < count; ++j) {
    grad_rows.p[j] = grad[j];
    aligned = aligned && rows_aligned(grad[j], B, D);
  }
  if (points) {
    gp = *grad_points;
    aligned = aligned && points_aligned(gp, B);
  }
  BinomialRows rows;
  fill_binomial_rows(P.degree, rows);
  return dispatch_order_count(count, [&](auto K) {
    return with_chunk_width<T>(aligned, [&](auto V) {
      constexpr int k = decltype(K)::value, v = decltype(V)::value;
      const RowTiling tiling = plan_tiles<T>(B, D, v, list.count, P.degree, launch);
      return launch_with_tile_sums(
          tiling, grad_t ? 1 : 0, workspace,
          [&](double* partial) {
            return launch_tiles(path_backward_kernel<T, k, v>, tiling, launch, P, t, tiling, rows, list, grad_rows, gp,
                                partial, grad_t);
          },
          [&](double* partial) {
            return launch_per_sample(sum_tiles_kernel, B, launch, partial, B, tiling.tiles_per_row, grad_t);
          });
    });
  });
}

#define BEZIER_INSTANTIATE(T)                                                                               \
  template cudaError_t path_backward<T>(const ControlPoints<const T>&, Column, int64_t, int64_t, const int*, \
                                        int, const T* const*, const ControlPoints<T>*, OutColumn,          \
                                        const Workspace&, const Launch&);
BEZIER_FOR_EACH_SCALAR(BEZIER_INSTANTIATE)
#undef BEZIER_INSTANTIATE

}  // namespace gpu
}  // namespace bezier
