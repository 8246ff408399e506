// Device code shared by the CUDA kernels (bezier_cuda_*.cu): half-type conversions, per-tile
// weights in shared memory, deterministic group sums, and the launch helpers. The per-thread
// work itself is in bezier_cuda_tiles.h (host-testable).
#pragma once

#include <cstdint>
#include <limits>
#include <type_traits>

#include "bezier_cuda.h"

// X(T) for each element type the kernels are built for (explicit instantiations).
#define BEZIER_FOR_EACH_SCALAR(X) X(float) X(double) X(__half) X(__nv_bfloat16)

namespace bezier {
namespace gpu {

template <>
struct Convert<__half> {
  static BZ_HD float to_acc(__half x) { return __half2float(x); }
  static BZ_HD __half from_acc(float x) { return __float2half_rn(x); }
};

template <>
struct Convert<__nv_bfloat16> {
  static BZ_HD float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }
  static BZ_HD __nv_bfloat16 from_acc(float x) { return __float2bfloat16_rn(x); }
};

// Up to three [B, D] row pointers as one kernel argument.
template <typename T>
struct RowPointers {
  T* p[3];
};

// The calling thread's tile and lane; idle threads of the last block are not active.
struct ThreadTile {
  int64_t tile;
  int lane;
  bool active;
};

__device__ __forceinline__ ThreadTile thread_tile(const RowTiling& tiling) {
  ThreadTile me;
  me.tile = tiling.tile_of(blockIdx.x, threadIdx.x);
  me.lane = tiling.lane_of(threadIdx.x);
  me.active = me.tile < tiling.tile_count();
  return me;
}

// One slot of tiling.slot_bytes per tile of the block (dynamic shared memory).
extern __shared__ double bezier_weight_slots[];

// The float64 scratch at the start of the calling thread's tile slot (kScratchBytes): the weights'
// working row in stage_weights, free once they are staged.
__device__ __forceinline__ double* tile_scratch(const RowTiling& tiling) {
  return reinterpret_cast<double*>(reinterpret_cast<unsigned char*>(bezier_weight_slots) +
                                   tiling.slot_offset(threadIdx.x));
}

// The weights of the calling thread's tile: lane 0 computes them (float64, bezier_weights) into
// the tile's slot while the others wait. Every thread of the block calls this (it synchronises).
template <typename Acc>
__device__ __forceinline__ const Acc* stage_weights(const RowTiling& tiling, const ThreadTile& me,
                                                     const BinomialRows& rows, const OrderList& orders, Column t) {
  double* scratch = tile_scratch(tiling);
  Acc* w = reinterpret_cast<Acc*>(reinterpret_cast<unsigned char*>(scratch) + kScratchBytes);
  if (me.active && me.lane == 0) tile_weights(rows, orders, t[tiling.sample(me.tile)], scratch, w);
  __syncthreads();
  return w;
}

// Sums each of v[0..N) over the `group` threads of every tile, in a fixed order (deterministic);
// the totals are valid in lane 0. Every thread of the block calls this (idle ones with zeros).
template <int N, typename Acc>
__device__ __forceinline__ void group_sum(Acc (&v)[N], int group) {
  __shared__ Acc warp_sums[N][kThreads / 32];
  const int width = group < 32 ? group : 32;
  for (int offset = width / 2; offset > 0; offset /= 2)
    BZ_UNROLL
    for (int j = 0; j < N; ++j) v[j] += __shfl_xor_sync(0xffffffffu, v[j], offset);
  if (group <= 32) return;
  const int warp = threadIdx.x / 32;
  if (threadIdx.x % 32 == 0)
    BZ_UNROLL
    for (int j = 0; j < N; ++j) warp_sums[j][warp] = v[j];
  __syncthreads();
  if (threadIdx.x % group == 0)
    BZ_UNROLL
    for (int j = 0; j < N; ++j) {
      Acc s = warp_sums[j][warp];
      for (int other = 1; other < group / 32; ++other) s += warp_sums[j][warp + other];
      v[j] = s;
    }
}

// Sum of v over the block's threads, in a fixed order (deterministic); valid in thread 0. Every
// thread of the block calls this (it synchronises).
__device__ __forceinline__ double block_sum(double v) {
  __shared__ double warp_totals[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  if (threadIdx.x % 32 == 0) warp_totals[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x == 0)
    for (int warp = 1; warp < kThreads / 32; ++warp) v += warp_totals[warp];
  return v;
}

// ------------------------------------------------------------------------------ host side
// f(std::integral_constant<int, V>{}) with V = 16 / sizeof(T) (16-byte chunks) when every
// operand is aligned for them, else V = 1.
template <typename T, typename F>
cudaError_t with_chunk_width(bool aligned, F&& f) {
  if (aligned) return f(std::integral_constant<int, static_cast<int>(16 / sizeof(T))>{});
  return f(std::integral_constant<int, 1>{});
}

// The work split over [B, D] in chunks of `vector` elements, for tiles that keep `weight_rows`
// weight rows of T's accumulators.
template <typename T>
RowTiling plan_tiles(int64_t B, int64_t D, int vector, int weight_rows, int degree, const Launch& launch) {
  return make_row_tiling(B, D, vector, weight_slot_bytes(weight_rows, degree, sizeof(acc_t<T>)),
                         launch.multiprocessors);
}

// Runs main(partial); when `sums` per-sample sums span several tiles of a row, partial holds
// `sums` float64 per tile from the workspace and finish(partial) reduces them after main. (With
// one tile per row, partial is null and the main kernel finishes each sample itself.)
template <typename Main, typename Finish>
cudaError_t launch_with_tile_sums(const RowTiling& tiling, int sums, const Workspace& workspace, Main&& main,
                                  Finish&& finish) {
  const bool split = sums > 0 && tiling.tiles_per_row > 1;
  double* partial = split ? workspace(sums * tiling.tile_count()) : nullptr;
  if (split && partial == nullptr) return cudaErrorMemoryAllocation;
  const cudaError_t err = main(partial);
  return err == cudaSuccess && split ? finish(partial) : err;
}

// kernel<<<tiling.blocks, kThreads, tiling.shared_bytes(), launch.stream>>>(args...), checked.
template <typename... Params, typename... Args>
cudaError_t launch_tiles(void (*kernel)(Params...), const RowTiling& tiling, const Launch& launch,
                         const Args&... args) {
  if (tiling.blocks > std::numeric_limits<int>::max()) return cudaErrorInvalidConfiguration;
  if (tiling.blocks == 0) return cudaSuccess;
  kernel<<<static_cast<unsigned>(tiling.blocks), kThreads, tiling.shared_bytes(), launch.stream>>>(args...);
  return cudaGetLastError();
}

// One thread per sample: kernel<<<ceil(B / kThreads), kThreads, 0, launch.stream>>>(args...), checked.
template <typename... Params, typename... Args>
cudaError_t launch_per_sample(void (*kernel)(Params...), int64_t batch, const Launch& launch, const Args&... args) {
  const int64_t blocks = (batch + kThreads - 1) / kThreads;
  if (blocks > std::numeric_limits<int>::max()) return cudaErrorInvalidConfiguration;
  if (blocks == 0) return cudaSuccess;
  kernel<<<static_cast<unsigned>(blocks), kThreads, 0, launch.stream>>>(args...);
  return cudaGetLastError();
}

}  // namespace gpu
}  // namespace bezier
