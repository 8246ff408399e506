// The CUDA kernels' work split and per-thread work, free of torch and of the CUDA runtime: every
// function is BZ_HD, so the C++ unit tests run the exact indexing of the kernels on the host.
//
// A row is one sample's D features, processed in chunks of V elements (V = 16 bytes / element
// size when every row of every operand is 16-byte aligned, else V = 1; only a row's last chunk
// can be short). A row is cut into `tiles_per_row` tiles of at most `tile_chunks` chunks. A
// group of `group` threads (a power of two) handles one tile, lane l taking the tile's chunks
// l, l + group, ...; a block of kThreads threads holds kThreads / group tiles and keeps each
// tile's per-sample weights in a shared-memory slot. Offsets are 64-bit.
#pragma once

#include <cstdint>
#include <type_traits>

#include "bezier_common.h"

#if defined(__CUDA_ARCH__)
#define BZ_UNROLL _Pragma("unroll")
#define BZ_UNROLL_4 _Pragma("unroll 4")
#else
#define BZ_UNROLL
#define BZ_UNROLL_4
#endif

namespace bezier {
namespace gpu {

constexpr int kThreads = 256;            // threads per block
constexpr int kMaxItems = 4;             // chunks per thread per tile, at most
constexpr int kSharedBudget = 16 * 1024;  // bytes of weight slots per block (8 blocks fit an SM)
constexpr int kMaxWeightRows = 2 * 3;    // path backward: orders and orders + 1, 3 of each
constexpr int kScratchBytes = (kMaxDegree + 1) * 8;  // a slot's float64 row for bezier_weights

// Accumulation type: float32 for float32 and the half types, float64 for float64.
template <typename T>
using acc_t = std::conditional_t<std::is_same<T, double>::value, double, float>;

// Element <-> accumulator conversions; the half types' specialisations are in bezier_cuda.cuh.
template <typename T>
struct Convert {
  static BZ_HD acc_t<T> to_acc(T x) { return x; }
  static BZ_HD T from_acc(acc_t<T> x) { return x; }
};

// The derivative orders (0..kMaxOrder) whose weights a kernel keeps per tile, packed four bits
// apiece: a kernel argument read without an indexed array (which would go to local memory).
struct OrderList {
  int count = 0;
  unsigned packed = 0;

  BZ_HD OrderList& push(int order) {
    packed |= static_cast<unsigned>(order) << (4 * count++);
    return *this;
  }
  BZ_HD int operator[](int j) const { return static_cast<int>((packed >> (4 * j)) & 15u); }
};

// A [B] tensor on the device read in place (t, the loss's weights): float32 or float64, at most
// one pointer set, `stride` elements apart. Neither set reads as 1 everywhere (no weights).
struct Column {
  const float* f32 = nullptr;
  const double* f64 = nullptr;
  int64_t stride = 1;
  BZ_HD double operator[](int64_t b) const {
    return f64 ? f64[b * stride] : f32 ? static_cast<double>(f32[b * stride]) : 1.0;
  }
};

// A contiguous [B] output on the device (dL/dt) written in place: float32 or float64, at most one
// pointer set (neither: not asked for).
struct OutColumn {
  float* f32 = nullptr;
  double* f64 = nullptr;
  BZ_HD explicit operator bool() const { return f32 || f64; }
  BZ_HD void store(int64_t b, double v) const {
    if (f64)
      f64[b] = v;
    else
      f32[b] = static_cast<float>(v);
  }
};

// Bytes of one tile's shared-memory slot: float64 scratch for bezier_weights, then `rows`
// weight rows of degree + 1 accumulators (rounded up to 8 bytes, so slots stay aligned).
BZ_HD int weight_slot_bytes(int rows, int degree, int acc_bytes) {
  const int weights = rows * (degree + 1) * acc_bytes;
  return kScratchBytes + (weights + 7) / 8 * 8;
}

// Weights of `orders.count` orders at time t into w[j * (n + 1) + i] (float64 maths through
// scratch[kMaxDegree + 1], then rounded to Acc once).
template <typename Acc>
BZ_HD void tile_weights(const BinomialRows& rows, const OrderList& orders, double t, double* scratch, Acc* w) {
  const int n = rows.degree;
  for (int j = 0; j < orders.count; ++j) {
    const int order = orders[j];
    bezier_weights(rows, 1, &order, t, reinterpret_cast<double(*)[kMaxDegree + 1]>(scratch));
    for (int i = 0; i <= n; ++i) w[j * (n + 1) + i] = static_cast<Acc>(scratch[i]);
  }
}

struct RowTiling {
  int64_t batch, features;
  int vector;            // V: elements per chunk
  int group;             // threads per tile, a power of two dividing kThreads
  int slot_bytes;        // shared memory per tile (weight_slot_bytes)
  int64_t chunks;        // per row: ceil(features / V)
  int64_t tiles_per_row; // >= 1, even when features == 0 (per-sample results still exist)
  int64_t tile_chunks;   // chunks per tile (the last tile of a row may have fewer)
  int64_t blocks;

  BZ_HD int tiles_per_block() const { return kThreads / group; }
  // Byte offset, in the block's shared memory, of the weight slot of thread `thread`'s tile:
  // kScratchBytes of float64 scratch, then the weights.
  BZ_HD int slot_offset(int thread) const { return (thread / group) * slot_bytes; }
  BZ_HD int64_t tile_count() const { return batch * tiles_per_row; }
  BZ_HD int shared_bytes() const { return tiles_per_block() * slot_bytes; }
  // The tile of thread `thread` in block `block`; >= tile_count() for idle threads of the last block.
  BZ_HD int64_t tile_of(int64_t block, int thread) const { return block * tiles_per_block() + thread / group; }
  BZ_HD int lane_of(int thread) const { return thread & (group - 1); }
  BZ_HD int64_t sample(int64_t tile) const { return tile / tiles_per_row; }
  BZ_HD int64_t chunk_begin(int64_t tile) const { return (tile % tiles_per_row) * tile_chunks; }
  BZ_HD int64_t chunk_end(int64_t tile) const {
    const int64_t end = chunk_begin(tile) + tile_chunks;
    return end < chunks ? end : chunks;
  }
};

// The work split of a [batch, features] problem whose tiles need `slot_bytes` of shared memory.
// Prefers kMaxItems chunks per thread (fewer blocks, each weight computation amortised over
// more features) while that still gives `multiprocessors` * 8 blocks; few features per row
// put several rows in one block.
inline RowTiling make_row_tiling(int64_t batch, int64_t features, int vector, int slot_bytes, int multiprocessors) {
  RowTiling r;
  r.batch = batch;
  r.features = features;
  r.vector = vector;
  r.slot_bytes = slot_bytes;
  r.chunks = (features + vector - 1) / vector;
  int min_group = 1;  // the fewest threads per tile whose block keeps its slots within budget
  while (min_group < kThreads && (kThreads / min_group) * slot_bytes > kSharedBudget) min_group *= 2;
  const int64_t enough_blocks = 8 * static_cast<int64_t>(multiprocessors > 0 ? multiprocessors : 1);
  for (int items = kMaxItems;; items /= 2) {
    const int64_t threads_needed = (r.chunks + items - 1) / items;
    r.group = min_group;
    while (r.group < kThreads && r.group < threads_needed) r.group *= 2;
    const int64_t per_tile = static_cast<int64_t>(r.group) * items;
    r.tiles_per_row = r.chunks == 0 ? 1 : (r.chunks + per_tile - 1) / per_tile;
    r.tile_chunks = (r.chunks + r.tiles_per_row - 1) / r.tiles_per_row;  // even split of the row
    r.blocks = (r.tile_count() + r.tiles_per_block() - 1) / r.tiles_per_block();
    if (items == 1 || r.blocks >= enough_blocks) break;
  }
  return r;
}

// True when every row of a [B, ...] operand starts on a 16-byte boundary (null: no operand).
template <typename T>
bool rows_aligned(const T* base, int64_t batch, int64_t batch_stride) {
  constexpr int64_t V = 16 / sizeof(T);
  return base == nullptr ||
         (reinterpret_cast<uintptr_t>(base) % 16 == 0 && (batch <= 1 || batch_stride % V == 0));
}

template <typename T>
bool points_aligned(const ControlPoints<T>& P, int64_t batch) {
  constexpr int64_t V = 16 / sizeof(T);
  const bool guides = P.degree < 2 || (rows_aligned(P.guides, batch, P.guides_batch_stride) &&
                                       (P.degree < 3 || P.guides_point_stride % V == 0));
  return guides && rows_aligned(P.x0, batch, P.x0_batch_stride) && rows_aligned(P.x1, batch, P.x1_batch_stride);
}

// ------------------------------------------------------------------------------ chunk access
// A chunk of V elements at p, of which `left` (>= 1) exist: one 16-byte access when whole
// (V > 1 only when the launcher checked alignment), element by element for a row's last chunk.
template <typename T, int V>
struct alignas(16) Pack {
  T v[V];
};

template <int V, typename T>
BZ_HD void load_chunk(const T* p, int64_t left, acc_t<T> (&out)[V]) {
  if constexpr (V > 1) {
    if (left >= V) {
      const Pack<T, V> pack = *reinterpret_cast<const Pack<T, V>*>(p);
      BZ_UNROLL
      for (int e = 0; e < V; ++e) out[e] = Convert<T>::to_acc(pack.v[e]);
      return;
    }
  }
  BZ_UNROLL
  for (int e = 0; e < V; ++e) out[e] = e < left ? Convert<T>::to_acc(p[e]) : acc_t<T>(0);
}

template <int V, typename T>
BZ_HD void store_chunk(T* p, int64_t left, const acc_t<T> (&in)[V]) {
  if constexpr (V > 1) {
    if (left >= V) {
      Pack<T, V> pack;
      BZ_UNROLL
      for (int e = 0; e < V; ++e) pack.v[e] = Convert<T>::from_acc(in[e]);
      *reinterpret_cast<Pack<T, V>*>(p) = pack;
      return;
    }
  }
  BZ_UNROLL
  for (int e = 0; e < V; ++e)
    if (e < left) p[e] = Convert<T>::from_acc(in[e]);
}

// acc[k][e] += w[k * (n + 1) + i] * v[e] for the K weight rows of point i.
template <int K, int V, typename Acc>
BZ_HD void accumulate(const Acc* w, int n, int i, const Acc (&v)[V], Acc (&acc)[K][V]) {
  BZ_UNROLL
  for (int k = 0; k < K; ++k) {
    const Acc wk = w[k * (n + 1) + i];
    BZ_UNROLL
    for (int e = 0; e < V; ++e) acc[k][e] += wk * v[e];
  }
}

// ------------------------------------------------------------------------------ per-thread work
// Each function does one thread's chunks of `tile` (lane `lane`) given the tile's weights w.

// out[k][b, d] = sum_i w[k][i] P_i[b, d]; out[k] is [B, D] contiguous.
template <typename T, int K, int V>
BZ_HD void path_forward_thread(const RowTiling& tiling, int64_t tile, int lane, const ControlPoints<const T>& P,
                               const acc_t<T>* w, T* const* out) {
  using Acc = acc_t<T>;
  const int n = P.degree;
  const int64_t b = tiling.sample(tile), D = tiling.features, end = tiling.chunk_end(tile);
  for (int64_t c = tiling.chunk_begin(tile) + lane; c < end; c += tiling.group) {
    const int64_t d = c * V, left = D - d;
    Acc acc[K][V] = {};
    BZ_UNROLL_4
    for (int i = 0; i <= n; ++i) {
      Acc v[V];
      load_chunk<V>(P.point(b, i) + d, left, v);
      accumulate<K>(w, n, i, v, acc);
    }
    BZ_UNROLL
    for (int k = 0; k < K; ++k) store_chunk<V>(out[k] + b * D + d, left, acc[k]);
  }
}

// Backward of path_forward given grad[k] ([B, D] contiguous):
//   w_points (K rows, may be null):  grad_points P_i[b, d] = sum_k w_points[k][i] grad[k][b, d]
//   w_next (K rows of orders + 1, may be null): returns this thread's share of
//       sum_k sum_d grad[k][b, d] * B^(orders[k] + 1)[b, d], the sample's dL/dt
template <typename T, int K, int V>
BZ_HD acc_t<T> path_backward_thread(const RowTiling& tiling, int64_t tile, int lane, const ControlPoints<const T>& P,
                                    const acc_t<T>* w_points, const acc_t<T>* w_next, const T* const* grad,
                                    const ControlPoints<T>& grad_points) {
  using Acc = acc_t<T>;
  const int n = P.degree;
  const int64_t b = tiling.sample(tile), D = tiling.features, end = tiling.chunk_end(tile);
  Acc dt = Acc(0);
  for (int64_t c = tiling.chunk_begin(tile) + lane; c < end; c += tiling.group) {
    const int64_t d = c * V, left = D - d;
    Acc g[K][V];
    BZ_UNROLL
    for (int k = 0; k < K; ++k) load_chunk<V>(grad[k] + b * D + d, left, g[k]);
    Acc next[K][V] = {};
    for (int i = 0; i <= n; ++i) {
      if (w_points) {
        Acc s[V] = {};
        BZ_UNROLL
        for (int k = 0; k < K; ++k) {
          const Acc wk = w_points[k * (n + 1) + i];
          BZ_UNROLL
          for (int e = 0; e < V; ++e) s[e] += wk * g[k][e];
        }
        store_chunk<V>(grad_points.point(b, i) + d, left, s);
      }
      if (w_next) {
        Acc v[V];
        load_chunk<V>(P.point(b, i) + d, left, v);
        accumulate<K>(w_next, n, i, v, next);
      }
    }
    BZ_UNROLL
    for (int k = 0; k < K; ++k)
      BZ_UNROLL
      for (int e = 0; e < V; ++e) dt += g[k][e] * next[k][e];  // 0 for a short chunk's missing elements
  }
  return dt;
}

// Sums of the fused loss over one thread's chunks (see bezier_cpu.h loss_forward):
//   velocity: r = pred - B'(t),             dr/dt = -B''(t)     (w rows: orders 1, 2)
//   endpoint: r = B(t) + (1 - t) pred - x1, dr/dt = B'(t) - pred (w rows: orders 0, 1)
// writes out_mult * r to resid ([B, D] contiguous) and adds sum r^2 to sq and sum r dr/dt to rdt.
template <typename T, Target target, int V>
BZ_HD void loss_forward_thread(const RowTiling& tiling, int64_t tile, int lane, const ControlPoints<const T>& P,
                               const acc_t<T>* w, double t, const T* pred, int64_t pred_batch_stride,
                               acc_t<T> out_mult, T* resid, acc_t<T>& sq, acc_t<T>& rdt) {
  using Acc = acc_t<T>;
  const int n = P.degree;
  const int64_t b = tiling.sample(tile), D = tiling.features, end = tiling.chunk_end(tile);
  const Acc one_minus_t = static_cast<Acc>(1.0 - t);
  for (int64_t c = tiling.chunk_begin(tile) + lane; c < end; c += tiling.group) {
    const int64_t d = c * V, left = D - d;
    Acc acc[2][V] = {};
    Acc v[V] = {};  // after the loop: x1 = P_n, for the endpoint target
    BZ_UNROLL_4
    for (int i = 0; i <= n; ++i) {
      load_chunk<V>(P.point(b, i) + d, left, v);
      accumulate<2>(w, n, i, v, acc);
    }
    Acc p[V], r[V];
    load_chunk<V>(pred + b * pred_batch_stride + d, left, p);
    BZ_UNROLL
    for (int e = 0; e < V; ++e) {  // missing elements of a short chunk give r = 0
      if constexpr (target == Target::kVelocity) {
        r[e] = p[e] - acc[0][e];
        rdt -= r[e] * acc[1][e];
      } else {
        r[e] = acc[0][e] + one_minus_t * p[e] - v[e];
        rdt += r[e] * (acc[1][e] - p[e]);
      }
      sq += r[e] * r[e];
      r[e] *= out_mult;
    }
    store_chunk<V>(resid + b * D + d, left, r);
  }
}

// out[b, d] *= mult over one thread's chunks of `tile` (out [B, D] contiguous): pseudo-Huber's
// factor of r in dL/dpred, known once the row's norm is.
template <typename T, int V>
BZ_HD void scale_row_thread(const RowTiling& tiling, int64_t tile, int lane, acc_t<T> mult, T* out) {
  using Acc = acc_t<T>;
  const int64_t b = tiling.sample(tile), D = tiling.features, end = tiling.chunk_end(tile);
  for (int64_t c = tiling.chunk_begin(tile) + lane; c < end; c += tiling.group) {
    const int64_t d = c * V, left = D - d;
    Acc v[V];
    load_chunk<V>(out + b * D + d, left, v);
    BZ_UNROLL
    for (int e = 0; e < V; ++e) v[e] *= mult;
    store_chunk<V>(out + b * D + d, left, v);
  }
}

// What finishing one sample of the whole loss leaves to its kernel: its term m_b l_b of the
// reduced loss, and the factor of its residual in out that is still to be applied (1: none).
struct FusedSample {
  double term;
  double mult;
};

// The whole loss's per-sample factors and outputs (the fused_loss op; FusedLossTensors in
// bezier_ops.h), computed inside the kernels from t and the weights: m_b = weight_b * mean_factor
// is sample b's factor in the reduced loss, dr/dpred is 1 (velocity) or 1 - t_b (endpoint).
template <typename T>
struct FusedLossOutputs {
  using Acc = acc_t<T>;
  Loss kind;
  double huber_c;
  Column weight;       // neither pointer set: every weight is 1
  double mean_factor;  // 1 / B for a mean, else 1
  bool gradient;       // out holds dL/dpred for a unit upstream gradient (else r)
  bool rowwise;        // reduction "none": value[b] = m_b l_b here; else the kernels sum the terms into value[0]
  T* value;
  Acc* weight_grad;    // [B] dL/dweight_b: mean_factor * l_b
  Acc* scale;          // [B] dL/dr_bd = scale_b r_bd
  Acc* dt;             // [B] dL/dt_b, or null (not asked for)

  BZ_HD double factor(int64_t b) const { return weight[b] * mean_factor; }

  // The factor of r in out when it is known before the row's sums: mse's m_b (2 / D) dr/dpred
  // with gradient; 1 otherwise (out is r, or pseudo-Huber's factor, which needs the row's norm).
  template <Target target>
  BZ_HD double mult_before_sums(int64_t b, int64_t D, double t) const {
    if (!gradient || kind != Loss::kMse || D == 0) return 1.0;
    return factor(b) * (2.0 / static_cast<double>(D)) * pred_factor(target, t);
  }

  // Writes sample b's outputs from its sums sq = sum_d r^2 and rdt = sum_d r dr/dt.
  template <Target target>
  BZ_HD FusedSample finish(int64_t b, int64_t D, double t, double sq, double rdt) const {
    const LossSample s = finish_loss(kind, D, huber_c, sq, rdt);
    const double m = factor(b);
    weight_grad[b] = static_cast<Acc>(mean_factor * s.loss);
    scale[b] = static_cast<Acc>(m * s.scale);
    if (dt) dt[b] = static_cast<Acc>(m * s.dt);
    if (rowwise) value[b] = Convert<T>::from_acc(static_cast<Acc>(m * s.loss));
    const bool rescale = gradient && kind == Loss::kPseudoHuber;
    return {m * s.loss, rescale ? m * s.scale * pred_factor(target, t) : 1.0};
  }
};

// Sum of sample b's tile partials, in tile order (deterministic).
BZ_HD double sum_tiles(const double* partial, int64_t b, int64_t tiles_per_row) {
  double s = 0.0;
  for (int64_t j = 0; j < tiles_per_row; ++j) s += partial[b * tiles_per_row + j];
  return s;
}

}  // namespace gpu
}  // namespace bezier
