// Helpers of the C++ unit tests: a failure counter, a naive float64 de Casteljau evaluation
// (the independent reference), and random batches of stacked control points.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "bezier_common.h"

namespace bezier_test {

inline int failures = 0;

inline void expect(bool ok, const char* what, double value) {
  if (!ok) {
    ++failures;
    std::printf("FAIL %s (%.3g)\n", what, value);
  }
}

// k-th derivative of the curve through points (degree n) at t: n!/(n-k)! times de Casteljau of
// the k-th differences.
inline double naive_derivative(std::vector<double> p, int k, double t) {
  const int n = static_cast<int>(p.size()) - 1;
  if (k > n) return 0.0;
  double factor = 1.0;
  for (int r = 0; r < k; ++r) {
    for (size_t i = 0; i + 1 < p.size(); ++i) p[i] = p[i + 1] - p[i];
    p.pop_back();
    factor *= n - r;
  }
  for (size_t len = p.size(); len > 1; --len)
    for (size_t i = 0; i + 1 < len; ++i) p[i] = (1 - t) * p[i] + t * p[i + 1];
  return factor * p[0];
}

inline double rel(double a, double b, double scale) { return std::fabs(a - b) / std::max(scale, 1e-300); }

// B samples of n + 1 stacked control points [B, n+1, D] (the guides are a strided view) in a
// buffer of [B, n+1, stride] (stride >= D; default D), starting `offset` elements in (offset 1
// misaligns every row), and times t (0 and 1 among them when B > 2).
template <typename T>
struct Batch {
  int64_t B, D;
  int n;
  int64_t offset, stride;
  std::vector<T> stacked;
  std::vector<double> t;

  Batch(int64_t B_, int64_t D_, int n_, unsigned seed, int64_t offset_ = 0, int64_t stride_ = -1)
      : B(B_), D(D_), n(n_), offset(offset_), stride(stride_ < 0 ? D_ : stride_),
        stacked(offset + B_ * (n_ + 1) * stride), t(B_) {
    std::mt19937 rng(seed);
    std::normal_distribution<double> normal;
    std::uniform_real_distribution<double> uniform;
    for (auto& v : stacked) v = static_cast<T>(normal(rng));
    for (auto& v : t) v = uniform(rng);
    if (B > 2) t[0] = 0.0, t[1] = 1.0;
  }
  T at(int64_t b, int i, int64_t d) const { return stacked[offset + (b * (n + 1) + i) * stride + d]; }
  bezier::ControlPoints<const T> points() const {
    const T* base = stacked.data() + offset;
    const int64_t S = stride;
    return {base, base + n * S, base + S, (n + 1) * S, (n + 1) * S, (n + 1) * S, S, n};
  }
  std::vector<double> column(int64_t b, int64_t d) const {
    std::vector<double> p(n + 1);
    for (int i = 0; i <= n; ++i) p[i] = static_cast<double>(at(b, i, d));
    return p;
  }
};

// Per-sample factors for the fused loss tests: 1 everywhere, or distinct positive values.
inline std::vector<double> sample_factors(int64_t B, bool varied, double first, double step) {
  std::vector<double> f(B, 1.0);
  if (varied)
    for (int64_t b = 0; b < B; ++b) f[b] = first + step * static_cast<double>(b);
  return f;
}

// Worst relative error of a fused loss's outputs against the naive float64 evaluation:
// resid [B, D] contiguous (out_scale[b] * r), loss/scale/dt [B] (scale and dt times row_weight[b]);
// pred [B, D] with batch stride pred_stride.
template <typename T, typename Acc>
double loss_error(const Batch<T>& batch, bezier::Target target, bezier::Loss kind, double c,
                  const std::vector<T>& pred, int64_t pred_stride, const std::vector<T>& resid,
                  const std::vector<Acc>& loss, const std::vector<Acc>& scale, const std::vector<Acc>& dt,
                  const std::vector<double>& out_scale, const std::vector<double>& row_weight,
                  bool gradient_out = false) {
  const int64_t D = batch.D;
  const int n = batch.n;
  double worst = 0.0;
  for (int64_t b = 0; b < batch.B; ++b) {
    double s = 0.0, sdt = 0.0;
    const double t = batch.t[b];
    std::vector<double> residual(D);
    for (int64_t d = 0; d < D; ++d) {
      const auto p = batch.column(b, d);
      const double v = static_cast<double>(pred[b * pred_stride + d]);
      double r, drdt;
      if (target == bezier::Target::kVelocity) {
        r = v - naive_derivative(p, 1, t);
        drdt = -naive_derivative(p, 2, t);
      } else {
        r = naive_derivative(p, 0, t) + (1 - t) * v - p[n];
        drdt = naive_derivative(p, 1, t) - v;
      }
      residual[d] = r;
      s += r * r;
      sdt += r * drdt;
    }
    const double l = kind == bezier::Loss::kMse ? s / D : std::sqrt(s + c * c) - c;
    // no features: no gradient (the reference's gradient of a sum over nothing)
    const double f = D == 0 ? 0.0 : row_weight[b] * (kind == bezier::Loss::kMse ? 2.0 / D : 1.0 / std::sqrt(s + c * c));
    // out: out_scale_b r, or (gradient_out) dL/dpred = f dr/dpred r
    const double out_factor = gradient_out ? f * (target == bezier::Target::kVelocity ? 1.0 : 1.0 - t) : out_scale[b];
    for (int64_t d = 0; d < D; ++d) {
      const double written = out_factor * residual[d];
      worst = std::max(worst, rel(static_cast<double>(resid[b * D + d]), written, std::max(1.0, std::fabs(written))));
    }
    worst = std::max(worst, rel(static_cast<double>(loss[b]), l, std::max(1e-3, std::fabs(l))));
    worst = std::max(worst, rel(static_cast<double>(scale[b]), f, std::fabs(f)));
    worst = std::max(worst, rel(static_cast<double>(dt[b]), f * sdt, std::max(1.0, std::fabs(f * sdt))));
  }
  return worst;
}

}  // namespace bezier_test
