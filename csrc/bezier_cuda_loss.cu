// CUDA distillation loss. loss_forward (the loss_fwd op): one pass over the control points and
// pred writes the residual and each sample's loss, gradient scale and dloss/dt (bezier::finish_loss).
// fused_loss (the fused_loss op, the whole loss): the same pass with the row weights, dr/dpred and
// the output's factor computed in the kernel, each sample finished where its row is summed, and
// the reduction in fixed-order block sums plus one single-block kernel. The per-thread work is in
// bezier_cuda_tiles.h (loss_forward_thread, scale_row_thread, FusedLossOutputs); a sample's sums
// are reduced over its tile's threads (group_sum) and, when a row spans several tiles, by a
// second kernel.
#include "bezier_cuda.cuh"

namespace bezier {
namespace gpu {
namespace {

// The weight rows a loss kernel keeps: the order of the residual, then the order of its t-derivative.
OrderList loss_orders(Target target) {
  return target == Target::kVelocity ? OrderList().push(1).push(2) : OrderList().push(0).push(1);
}

// Adds the block's terms of the reduced loss into block_terms[block] (null: nothing to add). Every
// thread of the block calls this (it synchronises, on a condition uniform over the launch).
__device__ __forceinline__ void add_block_terms(double term, double* block_terms) {
  if (!block_terms) return;
  term = block_sum(term);
  if (threadIdx.x == 0) block_terms[blockIdx.x] = term;
}

// Finishes sample b when its row is one tile; else leaves the tile's sums of r^2 and r dr/dt in
// partial[tile] and partial[tile_count + tile].
template <typename T, Target target, int V>
__global__ void __launch_bounds__(kThreads)
    loss_forward_kernel(const ControlPoints<const T> P, const Column t, const RowTiling tiling,
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

// The whole loss: writes r (or dL/dpred) to out and, when a row is one tile, finishes its sample
// (FusedLossOutputs::finish), scales pseudo-Huber's dL/dpred once the row's norm is known (the
// factor passed to the tile's threads through its slot's scratch) and adds the block's terms of
// the reduced loss into block_terms[block] (null: "none", or rows of several tiles). With several
// tiles per row leaves the tiles' sums in partial, as loss_forward_kernel does.
// At least 2 blocks per SM allows 128 registers: ptxas' default target spills the half types.
template <typename T, Target target, int V>
__global__ void __launch_bounds__(kThreads, 2)
    fused_loss_kernel(const ControlPoints<const T> P, const Column t, const RowTiling tiling, const BinomialRows rows,
                      const OrderList orders, const T* pred, int64_t pred_batch_stride, T* out,
                      const FusedLossOutputs<T> o, double* partial, double* block_terms) {
  using Acc = acc_t<T>;
  const ThreadTile me = thread_tile(tiling);
  const Acc* w = stage_weights<Acc>(tiling, me, rows, orders, t);
  const int64_t b = tiling.sample(me.tile);
  const double tb = me.active ? t[b] : 0.0;
  Acc sums[2] = {Acc(0), Acc(0)};
  if (me.active)
    loss_forward_thread<T, target, V>(tiling, me.tile, me.lane, P, w, tb, pred, pred_batch_stride,
                                      static_cast<Acc>(o.template mult_before_sums<target>(b, tiling.features, tb)),
                                      out, sums[0], sums[1]);
  group_sum(sums, tiling.group);
  const bool lead = me.active && me.lane == 0;
  if (tiling.tiles_per_row > 1) {  // uniform over the launch: no barrier follows
    if (lead) {
      partial[me.tile] = sums[0];
      partial[tiling.tile_count() + me.tile] = sums[1];
    }
    return;
  }
  double term = 0.0;
  double* mult = tile_scratch(tiling);
  if (lead) {
    const FusedSample s = o.template finish<target>(b, tiling.features, tb, sums[0], sums[1]);
    term = s.term;
    *mult = s.mult;
  }
  if (o.gradient && o.kind == Loss::kPseudoHuber) {
    __syncthreads();
    if (me.active) scale_row_thread<T, V>(tiling, me.tile, me.lane, static_cast<Acc>(*mult), out);
  }
  add_block_terms(term, block_terms);
}

// Rows of several tiles: one thread per sample finishes it from its tiles' sums, keeps the factor
// still to apply to its row of out in row_mult[b] (or null: none) and adds the block's terms into
// block_terms[block] (or null).
template <typename T, Target target>
__global__ void __launch_bounds__(kThreads)
    fused_loss_finish_kernel(const double* partial, const Column t, const RowTiling tiling,
                             const FusedLossOutputs<T> o, double* row_mult, double* block_terms) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  double term = 0.0;
  if (b < tiling.batch) {
    const FusedSample s = o.template finish<target>(b, tiling.features, t[b], sum_tiles(partial, b, tiling.tiles_per_row),
                                                    sum_tiles(partial + tiling.tile_count(), b, tiling.tiles_per_row));
    term = s.term;
    if (row_mult) row_mult[b] = s.mult;
  }
  add_block_terms(term, block_terms);
}

template <typename T, int V>
__global__ void __launch_bounds__(kThreads)
    scale_rows_kernel(const RowTiling tiling, const double* row_mult, T* out) {
  const ThreadTile me = thread_tile(tiling);
  if (me.active)
    scale_row_thread<T, V>(tiling, me.tile, me.lane, static_cast<acc_t<T>>(row_mult[tiling.sample(me.tile)]), out);
}

// value[0] = the sum of terms[0..count) in a fixed order, or empty_total when count is 0.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    sum_terms_kernel(const double* terms, int64_t count, double empty_total, T* value) {
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += kThreads) s += terms[i];
  s = block_sum(s);
  if (threadIdx.x == 0) *value = Convert<T>::from_acc(static_cast<acc_t<T>>(count > 0 ? s : empty_total));
}

}  // namespace

template <typename T>
cudaError_t loss_forward(const ControlPoints<const T>& P, Column t, int64_t B, int64_t D, Target target,
                         const T* pred, int64_t pred_batch_stride, const double* out_scale, T* resid,
                         const LossOutputs<acc_t<T>>& out, const Workspace& workspace, const Launch& launch) {
  if (B == 0) return cudaSuccess;
  const OrderList list = loss_orders(target);
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

template <typename T>
cudaError_t fused_loss(const ControlPoints<const T>& P, Column t, int64_t B, int64_t D, Target target,
                       const T* pred, int64_t pred_batch_stride, T* out, const FusedLossOutputs<T>& o,
                       double empty_total, const Workspace& workspace, const Launch& launch) {
  const OrderList list = loss_orders(target);
  const bool aligned = points_aligned(P, B) && rows_aligned(pred, B, pred_batch_stride) && rows_aligned(out, B, D);
  BinomialRows rows;
  fill_binomial_rows(P.degree, rows);
  auto run = [&](auto target_constant) {
    constexpr Target tg = decltype(target_constant)::value;
    return with_chunk_width<T>(aligned, [&](auto V) {
      constexpr int v = decltype(V)::value;
      const RowTiling tiling = plan_tiles<T>(B, D, v, list.count, P.degree, launch);
      const bool split = tiling.tiles_per_row > 1;
      const bool rescale = split && o.gradient && o.kind == Loss::kPseudoHuber;
      // one workspace: the tiles' sums, the rows' factors, the blocks' terms of the reduced loss
      const int64_t sums = split ? 2 * tiling.tile_count() : 0, mults = rescale ? B : 0;
      const int64_t term_count = o.rowwise ? 0 : split ? (B + kThreads - 1) / kThreads : tiling.blocks;
      const int64_t count = sums + mults + term_count;
      double* scratch = count > 0 ? workspace(count) : nullptr;
      if (count > 0 && scratch == nullptr) return cudaErrorMemoryAllocation;
      double* partial = split ? scratch : nullptr;
      double* row_mult = rescale ? scratch + sums : nullptr;
      double* terms = term_count > 0 ? scratch + sums + mults : nullptr;
      cudaError_t err = launch_tiles(fused_loss_kernel<T, tg, v>, tiling, launch, P, t, tiling, rows, list, pred,
                                     pred_batch_stride, out, o, partial, split ? nullptr : terms);
      if (err == cudaSuccess && split)
        err = launch_per_sample(fused_loss_finish_kernel<T, tg>, B, launch, partial, t, tiling, o, row_mult, terms);
      if (err == cudaSuccess && rescale) err = launch_tiles(scale_rows_kernel<T, v>, tiling, launch, tiling, row_mult, out);
      if (err == cudaSuccess && !o.rowwise) {
        sum_terms_kernel<T><<<1, kThreads, 0, launch.stream>>>(terms, term_count, empty_total, o.value);
        err = cudaGetLastError();
      }
      return err;
    });
  };
  if (target == Target::kVelocity) return run(std::integral_constant<Target, Target::kVelocity>{});
  return run(std::integral_constant<Target, Target::kEndpoint>{});
}

#define BEZIER_INSTANTIATE(T)                                                                                    \
  template cudaError_t loss_forward<T>(const ControlPoints<const T>&, Column, int64_t, int64_t, Target, const T*, \
                                       int64_t, const double*, T*, const LossOutputs<acc_t<T>>&, const Workspace&, \
                                       const Launch&);                                                  \
  template cudaError_t fused_loss<T>(const ControlPoints<const T>&, Column, int64_t, int64_t, Target, const T*,   \
                                     int64_t, T*, const FusedLossOutputs<T>&, double, const Workspace&, const Launch&);
BEZIER_FOR_EACH_SCALAR(BEZIER_INSTANTIATE)
#undef BEZIER_INSTANTIATE

}  // namespace gpu
}  // namespace bezier
