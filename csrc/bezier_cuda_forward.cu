// CUDA path evaluation: every requested order (position, velocity, acceleration) in one pass
// over the control points. The per-thread work is path_forward_thread (bezier_cuda_tiles.h).
#include "bezier_cuda.cuh"

namespace bezier {
namespace gpu {
namespace {

template <typename T, int K, int V>
__global__ void __launch_bounds__(kThreads)
    path_forward_kernel(const ControlPoints<const T> P, const Column t, const RowTiling tiling,
                        const BinomialRows rows, const OrderList orders, const RowPointers<T> out) {
  const ThreadTile me = thread_tile(tiling);
  const acc_t<T>* w = stage_weights<acc_t<T>>(tiling, me, rows, orders, t);
  if (me.active) path_forward_thread<T, K, V>(tiling, me.tile, me.lane, P, w, out.p);
}

}  // namespace

template <typename T>
cudaError_t path_forward(const ControlPoints<const T>& P, Column t, int64_t B, int64_t D, const int* orders,
                         int count, T* const* out, const Launch& launch) {
  if (count < 1 || count > 3) return cudaErrorInvalidValue;
  if (B == 0 || D == 0) return cudaSuccess;
  OrderList list;
  RowPointers<T> out_rows{};
  bool aligned = points_aligned(P, B);
  for (int j = 0; j < count; ++j) {
    list.push(orders[j]);
    out_rows.p[j] = out[j];
    aligned = aligned && rows_aligned(out[j], B, D);
  }
  BinomialRows rows;
  fill_binomial_rows(P.degree, rows);
  return dispatch_order_count(count, [&](auto K) {
    return with_chunk_width<T>(aligned, [&](auto V) {
      constexpr int k = decltype(K)::value, v = decltype(V)::value;
      const RowTiling tiling = plan_tiles<T>(B, D, v, k, P.degree, launch);
      return launch_tiles(path_forward_kernel<T, k, v>, tiling, launch, P, t, tiling, rows, list, out_rows);
    });
  });
}

#define BEZIER_INSTANTIATE(T)                                                                              \
  template cudaError_t path_forward<T>(const ControlPoints<const T>&, Column, int64_t, int64_t, const int*, \
                                       int, T* const*, const Launch&);
BEZIER_FOR_EACH_SCALAR(BEZIER_INSTANTIATE)
#undef BEZIER_INSTANTIATE

}  // namespace gpu
}  // namespace bezier
