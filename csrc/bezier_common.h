// Torch-free maths shared by every compiled backend (CPU, CUDA) and the C++ unit tests.
//
// A degree-n Bezier curve B(t) = sum_i b_{i,n}(t) P_i; its k-th time derivative is again a
// weighted sum of the control points, B^(k)(t) = sum_i w_k[i] P_i, with
//   w_k[i] = n!/(n-k)! * sum_{j=0..k} (-1)^(k-j) C(k,j) b_{i-j,n-k}(t)      (b out of range = 0).
// Weights are computed per sample in float64 from a per-launch table of binomial coefficients,
// so they are exact at t = 0 and t = 1 and never overflow for the supported degrees.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define BZ_HD __host__ __device__ __forceinline__
#else
#define BZ_HD inline
#endif

namespace bezier {

// Highest degree the compiled kernels accept (the float64 torch reference has no such limit).
constexpr int kMaxDegree = 64;
// Highest derivative order a kernel evaluates: 2 in outputs, 3 inside the backward for dt.
constexpr int kMaxOrder = 3;

// Binomial rows C(n - r, j), j = 0..n - r, for r = 0..kMaxOrder. Filled once per launch.
struct BinomialRows {
  int degree;
  double c[kMaxOrder + 1][kMaxDegree + 1];
};

// Exact integer Pascal triangle (C(64, 32) < 2^64), so C(m, 0) = C(m, m) = 1 exactly and the
// weights reproduce P_0 and P_n exactly at t = 0 and 1.
BZ_HD void fill_binomial_rows(int degree, BinomialRows& rows) {
  rows.degree = degree;
  for (int r = 0; r <= kMaxOrder; ++r)
    for (int j = 0; j <= kMaxDegree; ++j) rows.c[r][j] = 0.0;
  uint64_t pascal[kMaxDegree + 1] = {1};
  for (int m = 0; m <= degree; ++m) {
    if (m > 0)
      for (int j = m; j > 0; --j) pascal[j] += pascal[j - 1];
    const int r = degree - m;
    if (r <= kMaxOrder)
      for (int j = 0; j <= m; ++j) rows.c[r][j] = static_cast<double>(pascal[j]);
  }
}

// w[j][0..n] = weights of the order orders[j] derivative of the degree-n curve at t (float64),
// for `count` orders (each 0..kMaxOrder; orders past n give zeros). Closed form: the degree n-k
// basis C(n-k,l) t^l (1-t)^(n-k-l) from running powers of t and 1 - t, then k differences
// d[i] = b[i-1] - b[i] and the factor n!/(n-k)!. Exact at t = 0 and 1; no division. Works in
// place in w (no local arrays), so a GPU thread can fill a row of shared memory directly.
BZ_HD void bezier_weights(const BinomialRows& rows, int count, const int* orders, double t,
                          double (*w)[kMaxDegree + 1]) {
  const int n = rows.degree;
  const double s = 1.0 - t;
  for (int j = 0; j < count; ++j) {
    const int k = orders[j], m = n - k;
    double* row = w[j];
    for (int i = 0; i <= n; ++i) row[i] = 0.0;
    if (m < 0) continue;
    double power = 1.0;  // t^l
    for (int l = 0; l <= m; ++l) {
      row[l] = rows.c[k][l] * power;
      power *= t;
    }
    power = 1.0;  // (1 - t)^(m - l)
    for (int l = m; l >= 0; --l) {
      row[l] *= power;
      power *= s;
    }
    double falling = 1.0;
    for (int step = 1; step <= k; ++step) {  // row[m + step] is 0 before this step
      for (int i = m + step; i > 0; --i) row[i] = row[i - 1] - row[i];
      row[0] = -row[0];
      falling *= static_cast<double>(n - step + 1);
    }
    if (k > 0)
      for (int i = 0; i <= n; ++i) row[i] *= falling;
  }
}

// Returns f(std::integral_constant<int, K>{}) for K = count: the number of requested orders as a
// compile-time constant. count is 1..3 (validated by the caller); anything else runs as 3.
template <typename F>
decltype(auto) dispatch_order_count(int count, F&& f) {
  switch (count) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    default: return f(std::integral_constant<int, 3>{});
  }
}

// Control points of a batch: x0 = P_0 and x1 = P_n are [B, D], guides = P_1..P_{n-1} are
// [B, n-1, D]. Features are contiguous (unit stride); batch and point strides are free, so the
// guides may be a view of a stacked [B, n+1, D] tensor. Strides count elements (64-bit).
// T is const-qualified for inputs (ControlPoints<const float>) and not for gradients.
template <typename T>
struct ControlPoints {
  T* x0;
  T* x1;
  T* guides;  // may be null when degree == 1
  int64_t x0_batch_stride;
  int64_t x1_batch_stride;
  int64_t guides_batch_stride;
  int64_t guides_point_stride;
  int degree;

  BZ_HD T* point(int64_t b, int i) const {
    if (i == 0) return x0 + b * x0_batch_stride;
    if (i == degree) return x1 + b * x1_batch_stride;
    return guides + b * guides_batch_stride + static_cast<int64_t>(i - 1) * guides_point_stride;
  }
};

// The two distillation targets and losses of docs/spec.md section 2.
enum class Target : int { kVelocity = 0, kEndpoint = 1 };
enum class Loss : int { kMse = 0, kPseudoHuber = 1 };

// dr/dpred of a sample at time t: 1 (velocity) or 1 - t (endpoint).
BZ_HD double pred_factor(Target target, double t) { return target == Target::kVelocity ? 1.0 : 1.0 - t; }

// Per-sample results of the fused loss, from the residual's sums over the D features:
//   sq = sum_d r^2, rdt = sum_d r * dr/dt.
struct LossSample {
  double loss;   // l_b
  double scale;  // dl_b / dr_bd = scale * r_bd
  double dt;     // dl_b / dt_b (through the path only; pred is held fixed)
};

BZ_HD LossSample finish_loss(Loss loss, int64_t D, double huber_c, double sq, double rdt) {
  LossSample out;
  if (loss == Loss::kMse) {
    out.loss = sq / static_cast<double>(D);
    out.scale = 2.0 / static_cast<double>(D);
  } else {
    const double root = sqrt(sq + huber_c * huber_c);
    out.loss = root - huber_c;
    out.scale = 1.0 / root;
  }
  if (D == 0) out.scale = 0.0;  // no features, no gradient (2 / D and 1 / root would be inf, dt NaN)
  out.dt = out.scale * rdt;
  return out;
}

// The fused loss's per-sample outputs ([B] each, in the accumulation type Acc) and how a
// sample's sums fill them. m_b = row_weight[b] * row_factor (row_weight null: all 1) is the factor
// of sample b in the reduced loss (e.g. its weight, with row_factor = 1 / B for a mean): loss gets
// the unweighted l_b, scale and dt the derivatives of m_b l_b (dL/dr_bd = scale_b r_bd,
// dL/dt_b = dt_b). dt may be null (not asked for).
template <typename Acc>
struct LossOutputs {
  Loss kind;
  double huber_c;
  Acc* loss;
  Acc* scale;
  Acc* dt;
  const double* row_weight;
  double row_factor = 1.0;  // times every row_weight (e.g. 1 / B for a mean)

  // m_b, sample b's factor in the reduced loss.
  BZ_HD double weight(int64_t b) const { return (row_weight ? row_weight[b] : 1.0) * row_factor; }

  BZ_HD void write(int64_t b, int64_t D, double sq, double rdt) const {
    const LossSample s = finish_loss(kind, D, huber_c, sq, rdt);
    const double m = weight(b);
    loss[b] = static_cast<Acc>(s.loss);
    scale[b] = static_cast<Acc>(m * s.scale);
    if (dt) dt[b] = static_cast<Acc>(m * s.dt);
  }
};

}  // namespace bezier
