// CUDA fused distillation loss forward: one pass over the control points and pred writes the
// residual and each sample's loss, gradient scale and dloss/dt (bezier::finish_loss). The
// per-thread work is loss_forward_thread (bezier_cuda_tiles.h); a sample's sums are reduced
// over its tile's threads (group_sum) and, when a row spans several tiles, by a second kernel.
#include "bezier_cuda.cuh"

namespace bezier {
namespace gpu {
namespace {

// Finishes sample b when its row is one tile; else leaves the tile's sums of r^2 and r dr/dt in
// partial[tile] and partial[tile_count + tile].
template <typename T, Target target, int V>
__global__ void __launch_bounds__(kThreads)
    loss_forward_kernel(const ControlPoints<const T> P, const Times t, const RowTiling tiling,
                        const BinomialRows rows, const OrderList orders, const T* pred, int64_t pred_batch_stride,
                        const double* out_scale, T* resid, const LossOutputs<acc_t<T>> out, double* partial) {
  using Acc = acc_t<T>;
  const ThreadTile me = thread_tile(tiling);
  const Acc* w = stage_weights<Acc>(tiling, me, rows, orders, t);
  Acc sums[2] = {Acc(0), Acc(0)};
  const int64_t b = tiling.sample(me.tile);
  if (me.active)
    loss_forward_thread<T, target, V>(tiling, me.tile, me.lane, P, w, t[b], pred, pred_batch_stride,
                                      out_scale ? static_cast<Acc>(out_scale[b]) : Acc(1), resid, sums[0], sums[1]);
  group_sum(sums, tiling.group);
  if (!me.active || me.lane != 0) return;
  if (tiling.tiles_per_row == 1) {
    out.write(b, tiling.features, sums[0], sums[1]);
  } else {
    partial[me.tile] = sums[0];
    partial[tiling.tile_count() + me.tile] = sums[1];
  }
}

template <typename Acc>
__global__ void __launch_bounds__(kThreads)
    loss_finish_kernel(const double* partial, const RowTiling tiling, const LossOutputs<Acc> out) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (b >= tiling.batch) return;
  out.write(b, tiling.features, sum_tiles(partial, b, tiling.tiles_per_row),
            sum_tiles(partial + tiling.tile_count(), b, tiling.tiles_per_row));
}

}  // namespace

template <typename T>
cudaError_t loss_forward(const ControlPoints<const T>& P, Times t, int64_t B, int64_t D, Target target,
                         const T* pred, int64_t pred_batch_stride, const double* out_scale, T* resid,
                         const LossOutputs<acc_t<T>>& out, const Workspace& workspace, const Launch& launch) {
  if (B == 0) return cudaSuccess;
  // weight rows: the order of the residual, then the order of its t-derivative
  const OrderList list = target == Target::kVelocity ? OrderList().push(1).push(2) : OrderList().push(0).push(1);
  const bool aligned = points_aligned(P, B) && rows_aligned(pred, B, pred_batch_stride) && rows_aligned(resid, B, D);
  BinomialRows rows;
  fill_binomial_rows(P.degree, rows);
  auto run = [&](auto target_constant) {
    return with_chunk_width<T>(aligned, [&](auto V) {
      constexpr int v = decltype(V)::value;
      const RowTiling tiling = plan_tiles<T>(B, D, v, list.count, P.degree, launch);
      return launch_with_tile_sums(
          tiling, 2, workspace,
          [&](double* partial) {
            return launch_tiles(loss_forward_kernel<T, decltype(target_constant)::value, v>, tiling, launch, P, t,
                                tiling, rows, list, pred, pred_batch_stride, out_scale, resid, out, partial);
          },
          [&](double* partial) { return launch_per_sample(loss_finish_kernel<acc_t<T>>, B, launch, partial, tiling, out); });
    });
  };
  if (target == Target::kVelocity) return run(std::integral_constant<Target, Target::kVelocity>{});
  return run(std::integral_constant<Target, Target::kEndpoint>{});
}

#define BEZIER_INSTANTIATE(T)                                                                                    \
  template cudaError_t loss_forward<T>(const ControlPoints<const T>&, Times, int64_t, int64_t, Target, const T*, \
                                       int64_t, const double*, T*, const LossOutputs<acc_t<T>>&, const Workspace&, \
                                       const Launch&);
BEZIER_FOR_EACH_SCALAR(BEZIER_INSTANTIATE)
#undef BEZIER_INSTANTIATE

}  // namespace gpu
}  // namespace bezier
