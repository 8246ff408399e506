// Torch-free CPU kernels: path evaluation, its backward, and the fused distillation loss.
//
// Work is split into tiles of (sample b, block of kTile contiguous features). A tile reads each
// control point's block once and updates every requested order in the same pass; the per-sample
// weights are computed when a thread meets a new sample. `parallel_for(begin, end, grain, f)`
// runs f(chunk_begin, chunk_end) over tile ranges (at::parallel_for in the torch glue, a plain
// loop in the C++ tests). Accumulation is in Acc (float for half types and float, double for
// double); per-tile partial sums are kept in float64 and reduced in a fixed order, so results do
// not depend on the thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "bezier_common.h"

namespace bezier {
namespace cpu {

constexpr int64_t kTile = 512;

struct Tiling {
  int64_t batch, features, tiles_per_sample;

  Tiling(int64_t batch_, int64_t features_)
      : batch(batch_),
        features(features_),
        // D = 0 still gets one (empty) tile per sample so per-sample results are produced.
        tiles_per_sample(features_ == 0 ? 1 : (features_ + kTile - 1) / kTile) {}

  int64_t count() const { return batch * tiles_per_sample; }
  int64_t sample(int64_t tile) const { return tile / tiles_per_sample; }
  int64_t start(int64_t tile) const { return (tile % tiles_per_sample) * kTile; }
  int64_t length(int64_t tile) const { return std::min(kTile, features - start(tile)); }
  // Tiles per parallel chunk: enough features that a chunk amortises the thread hand-off.
  int64_t grain() const { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, std::min(features, kTile))); }

  // f(tile, b, d0, len) for the tiles [begin, end) in order: sample b, features [d0, d0 + len);
  // one division per range (a 64-bit division per tile costs as much as a small-D tile's maths).
  template <typename F>
  void for_each(int64_t begin, int64_t end, F&& f) const {
    int64_t b = sample(begin), j = begin - b * tiles_per_sample;
    for (int64_t tile = begin; tile < end; ++tile) {
      const int64_t d0 = j * kTile;
      f(tile, b, d0, std::min(kTile, features - d0));
      if (++j == tiles_per_sample) {
        j = 0;
        ++b;
      }
    }
  }
};

// Feature counts with their own compiled kernels (kD > 0: D == kD at compile time; 0: any D).
constexpr int kMaxFixedFeatures = 4;

// Returns f(std::integral_constant<int, kD>{}) with kD = D for D in 1..kMaxFixedFeatures (float and
// double only, to bound the instantiations), else kD = 0.
template <typename T, typename F>
decltype(auto) dispatch_features(int64_t D, F&& f) {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    switch (D) {
      case 1: return f(std::integral_constant<int, 1>{});
      case 2: return f(std::integral_constant<int, 2>{});
      case 3: return f(std::integral_constant<int, 3>{});
      case 4: return f(std::integral_constant<int, 4>{});
      default: break;
    }
  }
  return f(std::integral_constant<int, 0>{});
}

// Samples whose weights are computed together, vectorised across samples (one SIMD lane per
// sample): with small D one tile is one sample, and weights per sample would dominate.
constexpr int kSampleBlock = 32;

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define BEZIER_AVX2_DISPATCH 1
#define BEZIER_ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define BEZIER_ALWAYS_INLINE inline
#endif

// w[k][i][s] = w_{orders[k]}(t[s])[i] for s < n_samples (1..kSampleBlock), in float64 with every loop
// across the samples. Same arithmetic as bezier_weights (exact at t = 0 and 1); the factor n!/(n-k)!
// is folded into the binomials and the last difference writes w directly: 2 + k passes over the rows.
template <typename Acc, int K>
BEZIER_ALWAYS_INLINE void block_weights_body(const BinomialRows& rows, const int* orders, const double* t,
                                             int64_t n_samples, Acc (*w)[kMaxDegree + 1][kSampleBlock]) {
  const int n = rows.degree;
  constexpr int lanes = kSampleBlock;  // all of them (a fixed trip count vectorises best); padding gets t = 0
  double ts[kSampleBlock], power[kSampleBlock], row[kMaxDegree + 2][kSampleBlock];
  for (int s = 0; s < lanes; ++s) ts[s] = s < n_samples ? t[s] : 0.0;
  for (int k = 0; k < K; ++k) {
    const int ord = orders[k], m = n - ord;
    if (m < 0) {
      for (int i = 0; i <= n; ++i)
        for (int s = 0; s < lanes; ++s) w[k][i][s] = Acc(0);
      continue;
    }
    double falling = 1.0;
    for (int step = 1; step <= ord; ++step) falling *= static_cast<double>(n - step + 1);
    for (int s = 0; s < lanes; ++s) power[s] = 1.0;  // t^l
    for (int l = 0; l <= m; ++l) {
      const double c = rows.c[ord][l] * falling;
      for (int s = 0; s < lanes; ++s) {
        row[l][s] = c * power[s];
        power[s] *= ts[s];
      }
    }
    for (int s = 0; s < lanes; ++s) power[s] = 1.0;  // (1 - t)^(m - l)
    if (ord == 0) {
      for (int l = m; l >= 0; --l)
        for (int s = 0; s < lanes; ++s) {
          w[k][l][s] = static_cast<Acc>(row[l][s] * power[s]);
          power[s] *= 1.0 - ts[s];
        }
      continue;
    }
    for (int l = m; l >= 0; --l)
      for (int s = 0; s < lanes; ++s) {
        row[l][s] *= power[s];
        power[s] *= 1.0 - ts[s];
      }
    // ord differences d[i] = b[i-1] - b[i] (b[-1] = b[top] = 0); the last one straight into w
    for (int step = 1; step <= ord; ++step) {
      const int top = m + step;  // row[top] is 0 before this step
      for (int s = 0; s < lanes; ++s) row[top][s] = 0.0;
      if (step < ord) {
        for (int i = top; i > 0; --i)
          for (int s = 0; s < lanes; ++s) row[i][s] = row[i - 1][s] - row[i][s];
        for (int s = 0; s < lanes; ++s) row[0][s] = -row[0][s];
      } else {
        for (int i = top; i > 0; --i)
          for (int s = 0; s < lanes; ++s) w[k][i][s] = static_cast<Acc>(row[i - 1][s] - row[i][s]);
        for (int s = 0; s < lanes; ++s) w[k][0][s] = static_cast<Acc>(-row[0][s]);
      }
    }
  }
}

#ifdef BEZIER_AVX2_DISPATCH
// The same, compiled for AVX2 + FMA (4 float64 lanes instead of SSE2's 2), chosen at run time.
template <typename Acc, int K>
__attribute__((target("avx2,fma"))) void block_weights_avx2(const BinomialRows& rows, const int* orders,
                                                           const double* t, int64_t n_samples,
                                                           Acc (*w)[kMaxDegree + 1][kSampleBlock]) {
  block_weights_body<Acc, K>(rows, orders, t, n_samples, w);
}

inline bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
#endif

template <typename Acc, int K>
void block_weights(const BinomialRows& rows, const int* orders, const double* t, int64_t n_samples,
                   Acc (*w)[kMaxDegree + 1][kSampleBlock]) {
#ifdef BEZIER_AVX2_DISPATCH
  if (cpu_has_avx2()) return block_weights_avx2<Acc, K>(rows, orders, t, n_samples, w);
#endif
  block_weights_body<Acc, K>(rows, orders, t, n_samples, w);
}

// Weights of K orders for a block of consecutive samples, cast to the accumulation type:
// w[k][i][s] = w_{orders[k]}(t[s])[i]. Same arithmetic as bezier_weights (exact at t = 0, 1),
// in float64, with every loop running across the block's samples.
template <typename Acc, int K>
struct BlockWeights {
  Acc w[K][kMaxDegree + 1][kSampleBlock];
  int64_t first = 0, count = 0;  // the samples [first, first + count) held

  bool holds(int64_t b) const { return b >= first && b < first + count; }

  // Weights of samples [b0, b0 + n_samples), n_samples in 1..kSampleBlock (see block_weights).
  void compute(const BinomialRows& rows, const int* orders, const double* t, int64_t b0, int64_t n_samples) {
    block_weights<Acc, K>(rows, orders, t + b0, n_samples, w);
    first = b0;
    count = n_samples;
  }

  // Makes sure sample b is held: computes the block from b to at most `last` (inclusive).
  void ensure(const BinomialRows& rows, const int* orders, const double* t, int64_t b, int64_t last) {
    if (!holds(b)) compute(rows, orders, t, b, std::min<int64_t>(kSampleBlock, last - b + 1));
  }

  // Sample b's weights of control point i, one per order.
  void point(int64_t b, int i, Acc (&wi)[K]) const {
    for (int k = 0; k < K; ++k) wi[k] = w[k][i][b - first];
  }
};

// acc[k][d] (+)= wi[k] * p[d] for every order k < K and feature d < len: control point i's share,
// assigned for the first point (no zeroing pass: for small D a memset costs more than the maths).
template <bool kFirst, typename T, typename Acc, int K>
inline void accumulate_point(const Acc (&wi)[K], const T* __restrict__ p, int64_t len,
                             Acc (*__restrict__ acc)[kTile]) {
#pragma omp simd
  for (int64_t d = 0; d < len; ++d) {
    const Acc v = static_cast<Acc>(p[d]);
    for (int k = 0; k < K; ++k) acc[k][d] = kFirst ? wi[k] * v : acc[k][d] + wi[k] * v;
  }
}

// Features per register-resident chunk: K accumulators of W lanes stay in registers.
template <int K>
constexpr int chunk_width() {
  return K == 3 ? 8 : 16;
}

// acc[k][j] = sum_i w_k[i] * pts[i][d + j] for j < W: one chunk of W features, the sums in registers.
// w points to sample s's weights in a BlockWeights (order k, point i at w[(k * (kMaxDegree + 1) + i) * kSampleBlock]).
template <int W, typename T, typename Acc, int K>
inline void combine_chunk(const T* const* pts, int points, const Acc* w, int64_t d, Acc (&acc)[K][W]) {
  for (int k = 0; k < K; ++k)
    for (int j = 0; j < W; ++j) acc[k][j] = Acc(0);
  for (int i = 0; i < points; ++i) {
    const T* __restrict__ p = pts[i] + d;
    Acc v[W];
    for (int j = 0; j < W; ++j) v[j] = static_cast<Acc>(p[j]);
    for (int k = 0; k < K; ++k) {
      const Acc wk = w[(k * (kMaxDegree + 1) + i) * kSampleBlock];
      for (int j = 0; j < W; ++j) acc[k][j] += wk * v[j];
    }
  }
}

// Calls f(d, acc) over sample b's features [d0, d0 + len) in chunks: acc[k][j] = B^(orders[k])(t_b) at
// feature d + j, for j < W, with W = chunk_width<K>() for whole chunks, then W = 1 for the rest; with
// kD > 0 (len == D == kD), one chunk of W = kD.
template <int kD, typename T, typename Acc, int K, typename F>
inline void for_each_chunk(const ControlPoints<const T>& P, const BlockWeights<Acc, K>& bw, int64_t b, int64_t d0,
                           int64_t len, F&& f) {
  const int n = P.degree;
  const T* pts[kMaxDegree + 1];
  pts[0] = P.x0 + b * P.x0_batch_stride;
  pts[n] = P.x1 + b * P.x1_batch_stride;
  for (int i = 1; i < n; ++i) pts[i] = P.guides + b * P.guides_batch_stride + (i - 1) * P.guides_point_stride;
  const Acc* w = &bw.w[0][0][b - bw.first];
  if constexpr (kD > 0) {
    Acc acc[K][kD];
    combine_chunk<kD>(pts, n + 1, w, d0, acc);
    f(d0, acc);
    return;
  }
  constexpr int W = chunk_width<K>();
  const int64_t end = d0 + len;
  int64_t d = d0;
  for (; d + W <= end; d += W) {
    Acc acc[K][W];
    combine_chunk<W>(pts, n + 1, w, d, acc);
    f(d, acc);
  }
  for (; d < end; ++d) {
    Acc acc[K][1];
    combine_chunk<1>(pts, n + 1, w, d, acc);
    f(d, acc);
  }
}

// The compile-time width of an accumulator chunk passed to a for_each_chunk callback.
template <typename A>
constexpr int width_of() {
  return static_cast<int>(std::extent<std::remove_cv_t<std::remove_reference_t<A>>, 1>::value);
}

// The last sample whose tiles lie in [begin, end): the end of a chunk's weight blocks.
inline int64_t last_sample(const Tiling& tiling, int64_t end) { return tiling.sample(end - 1); }

// Small D (kD > 0, one tile per sample): acc[k][j][s] = B^(orders[k])(t) of sample bw.first + s at
// feature j, for the block's samples s < bw.count; every loop runs across the block's samples (one
// SIMD lane each), the features unrolled.
template <int kD, typename T, typename Acc, int K>
inline void combine_block(const ControlPoints<const T>& P, const BlockWeights<Acc, K>& bw,
                          Acc (&acc)[K][kD][kSampleBlock]) {
  const int n = P.degree, count = static_cast<int>(bw.count);
  for (int i = 0; i <= n; ++i) {
    const T* __restrict__ p = P.point(bw.first, i);
    const int64_t stride = i == 0 ? P.x0_batch_stride : i == n ? P.x1_batch_stride : P.guides_batch_stride;
    for (int k = 0; k < K; ++k) {
      const Acc* __restrict__ w = bw.w[k][i];
      Acc(*__restrict__ a)[kSampleBlock] = acc[k];
      if (i == 0) {
#pragma omp simd
        for (int s = 0; s < count; ++s)
          for (int j = 0; j < kD; ++j) a[j][s] = w[s] * static_cast<Acc>(p[s * stride + j]);
      } else {
#pragma omp simd
        for (int s = 0; s < count; ++s)
          for (int j = 0; j < kD; ++j) a[j][s] += w[s] * static_cast<Acc>(p[s * stride + j]);
      }
    }
  }
}

// Runs f(bw) for consecutive blocks of at most kSampleBlock samples in [begin, end), weights computed.
template <typename Acc, int K, typename F>
inline void for_each_block(const BinomialRows& rows, const int* orders, const double* t, int64_t begin, int64_t end,
                           BlockWeights<Acc, K>& bw, F&& f) {
  for (int64_t b0 = begin; b0 < end; b0 += kSampleBlock) {
    bw.compute(rows, orders, t, b0, std::min<int64_t>(kSampleBlock, end - b0));
    f();
  }
}

// out[k][b, d] = sum_i w_{orders[k]}(t_b)[i] * P_i[b, d];  each out[k] is [B, D], contiguous.
// kD: D at compile time (0: any D; see dispatch_features).
template <typename T, typename Acc, int K, int kD = 0, typename ParallelFor>
void path_forward(const ControlPoints<const T>& P, const double* t, int64_t B, int64_t D,
                  const int* orders, T* const* out, ParallelFor&& parallel_for) {
  const Tiling tiling(B, D);
  BinomialRows rows;
  fill_binomial_rows(P.degree, rows);
  parallel_for(0, tiling.count(), tiling.grain(), [&](int64_t begin, int64_t end) {
    BlockWeights<Acc, K> bw;
    if constexpr (kD > 0) {  // one tile per sample: blocks of samples, vectorised across them
      for_each_block(rows, orders, t, begin, end, bw, [&] {
        Acc acc[K][kD][kSampleBlock];
        combine_block<kD>(P, bw, acc);
        const int count = static_cast<int>(bw.count);
        for (int k = 0; k < K; ++k) {
          T* __restrict__ o = out[k] + bw.first * kD;
#pragma omp simd
          for (int s = 0; s < count; ++s)
            for (int j = 0; j < kD; ++j) o[s * kD + j] = static_cast<T>(acc[k][j][s]);
        }
      });
      return;
    }
    const int64_t last = last_sample(tiling, end);
    tiling.for_each(begin, end, [&](int64_t, int64_t b, int64_t d0, int64_t len) {
      bw.ensure(rows, orders, t, b, last);
      for_each_chunk<kD>(P, bw, b, d0, len, [&](int64_t d, const auto& acc) {
        constexpr int W = width_of<decltype(acc)>();
        for (int k = 0; k < K; ++k) {
          T* __restrict__ o = out[k] + b * D + d;
          for (int j = 0; j < W; ++j) o[j] = static_cast<T>(acc[k][j]);
        }
      });
    });
  });
}

// Backward of path_forward; grad[k] is dL/d out[k], [B, D] contiguous.
//   grad_points (if non-null outputs): dL/dP_i[b, d] = sum_k w_{orders[k]}[i] grad[k][b, d]
//   t_partial (if non-null, one float64 per tile): sum_k sum_d grad[k][b, d] * B^(orders[k]+1)[b, d]
template <typename T, typename Acc, int K, typename ParallelFor>
void path_backward(const ControlPoints<const T>& P, const double* t, int64_t B, int64_t D,
                   const int* orders, const T* const* grad, const ControlPoints<T>* grad_points,
                   double* t_partial, ParallelFor&& parallel_for) {
  const Tiling tiling(B, D);
  BinomialRows rows;
  fill_binomial_rows(P.degree, rows);
  int next_orders[K];
  for (int k = 0; k < K; ++k) next_orders[k] = orders[k] + 1;
  parallel_for(0, tiling.count(), tiling.grain(), [&](int64_t begin, int64_t end) {
    BlockWeights<Acc, K> sw, sw_next;
    Acc g[K][kTile];
    Acc dacc[K][kTile];
    const int64_t last = last_sample(tiling, end);
    tiling.for_each(begin, end, [&](int64_t tile, int64_t b, int64_t d0, int64_t len) {
      if (grad_points) sw.ensure(rows, orders, t, b, last);
      if (t_partial) sw_next.ensure(rows, next_orders, t, b, last);
      for (int k = 0; k < K; ++k) {
        const T* __restrict__ gk = grad[k] + b * D + d0;
        for (int64_t d = 0; d < len; ++d) g[k][d] = static_cast<Acc>(gk[d]);
      }
      for (int i = 0; i <= P.degree; ++i) {
        if (grad_points) {
          T* __restrict__ o = grad_points->point(b, i) + d0;
          Acc wi[K];
          sw.point(b, i, wi);
#pragma omp simd
          for (int64_t d = 0; d < len; ++d) {
            Acc s = Acc(0);
            for (int k = 0; k < K; ++k) s += wi[k] * g[k][d];
            o[d] = static_cast<T>(s);
          }
        }
        if (t_partial) {
          Acc wi[K];
          sw_next.point(b, i, wi);
          if (i == 0)
            accumulate_point<true>(wi, P.point(b, i) + d0, len, dacc);
          else
            accumulate_point<false>(wi, P.point(b, i) + d0, len, dacc);
        }
      }
      if (t_partial) {
        Acc sum = Acc(0);
        for (int k = 0; k < K; ++k)
#pragma omp simd reduction(+ : sum)
          for (int64_t d = 0; d < len; ++d) sum += g[k][d] * dacc[k][d];
        t_partial[tile] = static_cast<double>(sum);
      }
    });
  });
}

// Sums each sample's per-tile partials in tile order (deterministic): out[b] = sum of its tiles.
template <typename ParallelFor>
void reduce_tile_partials(const double* partial, int64_t B, int64_t D, double* out, ParallelFor&& parallel_for) {
  const int64_t per_sample = Tiling(B, D).tiles_per_sample;
  parallel_for(0, B, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      double s = 0.0;
      for (int64_t j = 0; j < per_sample; ++j) s += partial[b * per_sample + j];
      out[b] = s;
    }
  });
}

// The fused loss's finish inside loss_forward (fused_loss): the per-sample outputs to fill and
// whether out gets dL/dpred = scale_b dr/dpred r (gradient; scale_b includes m_b) instead of r.
// With one tile per sample (D <= kTile) loss_forward finishes each sample itself: no partials, no
// second pass over out (pseudo-Huber's factor, known only after the row's sum, is applied while
// the row is in registers or cache). With more tiles it writes partials for loss_finish, and
// mse's factor m_b (2 / D) dr/dpred, known before the pass, goes into out directly.
template <typename Acc>
struct LossFinish {
  LossOutputs<Acc> outputs;
  bool gradient;
};

// Samples b0 .. b0 + count - 1 finished from their sums sq and rdt (see LossFinish): their outputs
// written, and mult[s], the factor of sample b0 + s's residual in out.
template <Target target, typename Acc>
inline void finish_samples(const LossFinish<Acc>& f, const double* t, int64_t b0, int count, int64_t D,
                           const double* sq, const double* rdt, double* mult) {
  const LossOutputs<Acc>& o = f.outputs;
  if (o.kind == Loss::kMse) {
    const double inv = 1.0 / static_cast<double>(D), two_inv = D > 0 ? 2.0 * inv : 0.0;  // see finish_loss
#pragma omp simd
    for (int s = 0; s < count; ++s) {
      const int64_t b = b0 + s;
      const double scale = o.weight(b) * two_inv;
      o.loss[b] = static_cast<Acc>(sq[s] * inv);
      o.scale[b] = static_cast<Acc>(scale);
      if (o.dt) o.dt[b] = static_cast<Acc>(scale * rdt[s]);
      mult[s] = f.gradient ? scale * pred_factor(target, t[b]) : 1.0;
    }
    return;
  }
  const double c2 = o.huber_c * o.huber_c;
  const bool features = D > 0;  // no features, no gradient (see finish_loss)
#pragma omp simd
  for (int s = 0; s < count; ++s) {
    const int64_t b = b0 + s;
    const double root = std::sqrt(sq[s] + c2);
    const double scale = features ? o.weight(b) / root : 0.0;
    o.loss[b] = static_cast<Acc>(root - o.huber_c);
    o.scale[b] = static_cast<Acc>(scale);
    if (o.dt) o.dt[b] = static_cast<Acc>(scale * rdt[s]);
    mult[s] = f.gradient ? scale * pred_factor(target, t[b]) : 1.0;
  }
}

// Fused loss forward, one pass over the control points and pred:
//   velocity: r = pred - B'(t),               dr/dt = -B''(t)
//   endpoint: r = B(t) + (1 - t) pred - x1,   dr/dt = B'(t) - pred
// Without finish: writes out_scale[b] * r (r itself when out_scale is null) to out ([B, D]
// contiguous) and per-tile float64 sums of r^2 and (with kDt; else 0) r * dr/dt. With finish (and
// out_scale null): see LossFinish.
template <typename T, typename Acc, Target target, bool kDt = true, int kD = 0, typename ParallelFor>
void loss_forward(const ControlPoints<const T>& P, const double* t, int64_t B, int64_t D,
                  const T* pred, int64_t pred_batch_stride, const double* out_scale, const LossFinish<Acc>* finish,
                  T* resid, double* sq_partial, double* rdt_partial, ParallelFor&& parallel_for) {
  constexpr int K = kDt ? 2 : 1;
  const Tiling tiling(B, D);
  const bool in_pass = finish && tiling.tiles_per_sample == 1;
  const bool mse_gradient = finish && finish->gradient && finish->outputs.kind == Loss::kMse;
  const bool rescale_row = in_pass && finish->gradient && !mse_gradient;
  const double two_over_d = D > 0 ? 2.0 / static_cast<double>(D) : 0.0;
  BinomialRows rows;
  fill_binomial_rows(P.degree, rows);
  // acc[0] holds the order the residual needs, acc[1] the order of its t-derivative.
  const int orders[2] = {target == Target::kVelocity ? 1 : 0, target == Target::kVelocity ? 2 : 1};
  parallel_for(0, tiling.count(), tiling.grain(), [&](int64_t begin, int64_t end) {
    BlockWeights<Acc, K> bw;
    if constexpr (kD > 0) {  // one tile per sample: blocks of samples, vectorised across them
      for_each_block(rows, orders, t, begin, end, bw, [&] {
        Acc acc[K][kD][kSampleBlock];
        combine_block<kD>(P, bw, acc);
        const int64_t b0 = bw.first;
        const int count = static_cast<int>(bw.count);
        const T* __restrict__ pr = pred + b0 * pred_batch_stride;
        const T* __restrict__ x1 = P.x1 + b0 * P.x1_batch_stride;
        const int64_t x1_stride = P.x1_batch_stride;
        Acc res[kD][kSampleBlock];
        double sq[kSampleBlock], rdt[kSampleBlock], mult[kSampleBlock];
#pragma omp simd
        for (int s = 0; s < count; ++s) {
          const Acc one_minus_t = static_cast<Acc>(1.0 - t[b0 + s]);
          Acc sq_s = Acc(0), rdt_s = Acc(0);
          for (int j = 0; j < kD; ++j) {
            const Acc v = static_cast<Acc>(pr[s * pred_batch_stride + j]);
            const Acc r = target == Target::kVelocity
                              ? v - acc[0][j][s]
                              : acc[0][j][s] + one_minus_t * v - static_cast<Acc>(x1[s * x1_stride + j]);
            res[j][s] = r;
            sq_s += r * r;
            if (kDt) rdt_s += target == Target::kVelocity ? -r * acc[K - 1][j][s] : r * (acc[K - 1][j][s] - v);
          }
          sq[s] = static_cast<double>(sq_s);
          rdt[s] = static_cast<double>(rdt_s);
        }
        if (in_pass) {
          finish_samples<target>(*finish, t, b0, count, D, sq, rdt, mult);
        } else {
          for (int s = 0; s < count; ++s) {
            mult[s] = out_scale ? out_scale[b0 + s] : 1.0;
            sq_partial[b0 + s] = sq[s];
            rdt_partial[b0 + s] = rdt[s];
          }
        }
        T* __restrict__ out = resid + b0 * kD;
#pragma omp simd
        for (int s = 0; s < count; ++s) {
          const Acc f = static_cast<Acc>(mult[s]);
          for (int j = 0; j < kD; ++j) out[s * kD + j] = static_cast<T>(f * res[j][s]);
        }
      });
      return;
    }
    const int64_t last = last_sample(tiling, end);
    tiling.for_each(begin, end, [&](int64_t tile, int64_t b, int64_t d0, int64_t len) {
      bw.ensure(rows, orders, t, b, last);
      const T* __restrict__ pr = pred + b * pred_batch_stride;
      const T* __restrict__ x1 = P.x1 + b * P.x1_batch_stride;
      T* __restrict__ out = resid + b * D;
      // r's factor in out, where it is known before the row's sums (else 1, rescaled below)
      const Acc mult = static_cast<Acc>(out_scale      ? out_scale[b]
                                        : mse_gradient ? finish->outputs.weight(b) * pred_factor(target, t[b]) * two_over_d
                                                       : 1.0);
      const Acc one_minus_t = static_cast<Acc>(1.0 - t[b]);
      Acc sq = Acc(0), rdt = Acc(0);
      // acc[0] holds the order the residual needs, acc[K - 1] (with kDt) the order of its t-derivative
      for_each_chunk<kD>(P, bw, b, d0, len, [&](int64_t d, const auto& acc) {
        constexpr int W = width_of<decltype(acc)>();
        for (int j = 0; j < W; ++j) {
          const Acc v = static_cast<Acc>(pr[d + j]);
          const Acc r = target == Target::kVelocity ? v - acc[0][j]
                                                    : acc[0][j] + one_minus_t * v - static_cast<Acc>(x1[d + j]);
          out[d + j] = static_cast<T>(mult * r);
          sq += r * r;
          if (kDt) rdt += target == Target::kVelocity ? -r * acc[K - 1][j] : r * (acc[K - 1][j] - v);
        }
      });
      if (!in_pass) {
        sq_partial[tile] = static_cast<double>(sq);
        rdt_partial[tile] = static_cast<double>(rdt);
        return;
      }
      const double sq_b = static_cast<double>(sq), rdt_b = static_cast<double>(rdt);
      double factor;
      finish_samples<target>(*finish, t, b, 1, D, &sq_b, &rdt_b, &factor);
      if (rescale_row) {  // the row was written a moment ago: it is in cache
        const Acc f = static_cast<Acc>(factor);
#pragma omp simd
        for (int64_t d = 0; d < len; ++d) out[d] = static_cast<T>(f * static_cast<Acc>(out[d]));
      }
    });
  });
}

// Per-sample loss, gradient scale and dloss/dt (see LossSample) from loss_forward's partials.
template <typename Acc, typename ParallelFor>
void loss_finish(const LossOutputs<Acc>& out, int64_t B, int64_t D, const double* sq_partial,
                 const double* rdt_partial, ParallelFor&& parallel_for) {
  const int64_t per_sample = Tiling(B, D).tiles_per_sample;
  if (out.kind == Loss::kMse && per_sample == 1 && D > 0) {  // the common case without a division per sample
    const double inv = 1.0 / static_cast<double>(D), two_inv = D > 0 ? 2.0 * inv : 0.0;  // see finish_loss
    parallel_for(0, B, 4096, [&](int64_t begin, int64_t end) {
#pragma omp simd
      for (int64_t b = begin; b < end; ++b) {
        const double m = (out.row_weight ? out.row_weight[b] : 1.0) * out.row_factor;
        out.loss[b] = static_cast<Acc>(sq_partial[b] * inv);
        out.scale[b] = static_cast<Acc>(m * two_inv);
        if (out.dt) out.dt[b] = static_cast<Acc>(m * two_inv * rdt_partial[b]);
      }
    });
    return;
  }
  parallel_for(0, B, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      double sq = 0.0, rdt = 0.0;
      for (int64_t j = 0; j < per_sample; ++j) {
        sq += sq_partial[b * per_sample + j];
        rdt += rdt_partial[b * per_sample + j];
      }
      out.write(b, D, sq, rdt);
    }
  });
}

}  // namespace cpu
}  // namespace bezier
