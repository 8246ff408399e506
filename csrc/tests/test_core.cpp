// Unit tests of the torch-free core (bezier_common.h, bezier_cpu.h) against a naive float64
// de Casteljau evaluation. Run by ctest; no torch involved.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <thread>
#include <vector>

#include "bezier_cpu.h"
#include "naive.h"

using namespace bezier;
using namespace bezier_test;

namespace {

// Splits [begin, end) over a few std::threads, like at::parallel_for.
const auto threaded_for = [](int64_t begin, int64_t end, int64_t grain, const auto& f) {
  const int64_t workers = 3, chunk = std::max<int64_t>(grain, (end - begin + workers - 1) / workers);
  std::vector<std::thread> pool;
  for (int64_t s = begin; s < end; s += chunk) pool.emplace_back([&, s] { f(s, std::min(end, s + chunk)); });
  for (auto& th : pool) th.join();
};

void test_weights() {
  const double ts[] = {0.0, 1.0, 0.5, 0.123, 0.999, -0.4, 1.3};
  for (int n = 1; n <= kMaxDegree; ++n) {
    BinomialRows rows;
    fill_binomial_rows(n, rows);
    const int orders[4] = {0, 1, 2, 3};
    double w[4][kMaxDegree + 1];
    for (double t : ts) {
      bezier_weights(rows, 4, orders, t, w);
      for (int k = 0; k < 4; ++k) {
        // weights applied to the unit vectors e_i are the derivatives of the basis curves
        double worst = 0.0, scale = 0.0;
        for (int i = 0; i <= n; ++i) {
          std::vector<double> e(n + 1, 0.0);
          e[i] = 1.0;
          const double ref = naive_derivative(e, k, t);
          worst = std::max(worst, std::fabs(w[k][i] - ref));
          scale = std::max(scale, std::fabs(ref));
        }
        const double tol = (std::fabs(t) > 1 ? 1e-9 : 1e-12) * std::max(scale, 1.0);
        expect(worst <= tol, "bezier_weights vs de Casteljau", worst);
      }
      if (t == 0.0) expect(w[0][0] == 1.0, "weight of P0 at t=0 is exactly 1", w[0][0]);
      if (t == 1.0) expect(w[0][n] == 1.0, "weight of Pn at t=1 is exactly 1", w[0][n]);
    }
  }
}

template <typename T>
void test_path(int n, int64_t B, int64_t D, double tol) {
  Batch<T> batch(B, D, n, 17 * n + static_cast<unsigned>(D));
  const int orders[3] = {2, 0, 1};
  std::vector<T> out(3 * B * D);
  T* out_ptrs[3] = {out.data(), out.data() + B * D, out.data() + 2 * B * D};
  cpu::path_forward<T, T, 3>(batch.points(), batch.t.data(), B, D, orders, out_ptrs, threaded_for);
  // backward with grad = 1 for every output: dL/dP_i = sum_k w_k[i]; dL/dt = sum_k sum_d B^(k+1)
  std::vector<T> grad(3 * B * D, T(1)), gx0(B * D), gx1(B * D), gg(B * (n > 1 ? n - 1 : 0) * D);
  ControlPoints<T> gp{gx0.data(), gx1.data(), gg.data(), D, D, (n - 1) * D, D, n};
  std::vector<double> partial(cpu::Tiling(B, D).count()), dt(B);
  const T* grad_ptrs[3] = {grad.data(), grad.data() + B * D, grad.data() + 2 * B * D};
  cpu::path_backward<T, T, 3>(batch.points(), batch.t.data(), B, D, orders, grad_ptrs, &gp, partial.data(), threaded_for);
  cpu::reduce_tile_partials(partial.data(), B, D, dt.data(), threaded_for);

  double err = 0, scale = 0, gerr = 0, terr = 0;
  for (int64_t b = 0; b < B; ++b) {
    double dt_ref = 0.0, dt_scale = 0.0;
    for (int64_t d = 0; d < D; ++d) {
      const auto p = batch.column(b, d);
      for (int k = 0; k < 3; ++k) {
        const double ref = naive_derivative(p, orders[k], batch.t[b]);
        err = std::max(err, std::fabs(static_cast<double>(out[(k * B + b) * D + d]) - ref));
        scale = std::max(scale, std::fabs(ref));
        const double next = naive_derivative(p, orders[k] + 1, batch.t[b]);
        dt_ref += next;
        dt_scale += std::fabs(next);
      }
      for (int i = 0; i <= n; ++i) {
        std::vector<double> e(n + 1, 0.0);
        e[i] = 1.0;
        double ref = 0.0;
        for (int k = 0; k < 3; ++k) ref += naive_derivative(e, orders[k], batch.t[b]);
        const double got = static_cast<double>(*(gp.point(b, i) + d));
        gerr = std::max(gerr, rel(got, ref, std::max(1.0, std::fabs(ref))));
      }
    }
    terr = std::max(terr, rel(dt[b], dt_ref, std::max(1.0, dt_scale)));
  }
  expect(err <= tol * std::max(scale, 1.0), "path_forward vs naive", err / std::max(scale, 1.0));
  expect(gerr <= tol, "path_backward points vs naive", gerr);
  expect(terr <= tol, "path_backward t vs naive", terr);
  if (B > 2) {  // exact endpoints: order 0 is the second requested output
    bool exact = true;
    for (int64_t d = 0; d < D; ++d) {
      exact &= out[(1 * B + 0) * D + d] == batch.at(0, 0, d);
      exact &= out[(1 * B + 1) * D + d] == batch.at(1, n, d);
    }
    expect(exact, "B(0) = P0 and B(1) = Pn exactly", 0);
  }
}

// finish: the fused loss's in-pass finish (cpu::LossFinish, D <= cpu::kTile): per-sample outputs and
// out = dL/dpred from loss_forward alone. kD: the small-D kernel (D == kD), vectorised across samples.
template <typename T, Target target, int kD = 0>
void test_loss(int n, int64_t B, int64_t D, Loss kind, double tol, bool scaled, bool finish = false) {
  Batch<T> batch(B, D, n, 5 * n + 1);
  std::vector<T> pred(B * D), resid(B * D);
  std::mt19937 rng(3);
  std::normal_distribution<double> normal;
  for (auto& v : pred) v = static_cast<T>(normal(rng));
  const int64_t tiles = cpu::Tiling(B, D).count();
  std::vector<double> sq(tiles), rdt(tiles);
  std::vector<T> loss(B), scale(B), dt(B);
  const double c = 0.3;
  // scaled: per-sample output multipliers and loss weights; else the null pointers (all 1)
  const auto out_scale = sample_factors(B, scaled, 0.5, 0.25), row_weight = sample_factors(B, scaled, 1.5, -0.01);
  const LossOutputs<T> outputs{kind, c, loss.data(), scale.data(), dt.data(), scaled ? row_weight.data() : nullptr};
  if (finish) {
    const cpu::LossFinish<T> in_pass{outputs, true};
    cpu::loss_forward<T, T, target, true, kD>(batch.points(), batch.t.data(), B, D, pred.data(), D, nullptr, &in_pass,
                                              resid.data(), nullptr, nullptr, threaded_for);
  } else {
    cpu::loss_forward<T, T, target, true, kD>(batch.points(), batch.t.data(), B, D, pred.data(), D,
                                              scaled ? out_scale.data() : nullptr, nullptr, resid.data(), sq.data(),
                                              rdt.data(), threaded_for);
    cpu::loss_finish(outputs, B, D, sq.data(), rdt.data(), threaded_for);
  }
  const double worst =
      loss_error(batch, target, kind, c, pred, D, resid, loss, scale, dt, out_scale, row_weight, finish);
  expect(worst <= tol, finish ? "loss_forward with its finish vs naive" : "loss_forward vs naive", worst);
}

}  // namespace

int main() {
  test_weights();
  for (int n : {1, 2, 3, 5, 16, 33, 64}) {
    for (int64_t D : {1, 7, 513, 1100}) {
      test_path<double>(n, 5, D, 1e-11);
      test_path<float>(n, 5, D, 2e-5);
    }
    test_path<float>(n, 0, 9, 0);
    // small D: several blocks of per-sample weights (cpu::kSampleBlock), the last one partial
    test_path<double>(n, 77, 2, 1e-11);
    test_path<float>(n, 77, 3, 2e-5);
    test_loss<double, Target::kVelocity>(n, 77, 2, Loss::kMse, 1e-10, true);
    test_loss<double, Target::kEndpoint>(n, 77, 3, Loss::kPseudoHuber, 1e-10, false);
    test_loss<double, Target::kVelocity, 2>(n, 77, 2, Loss::kPseudoHuber, 1e-10, true);
    test_loss<float, Target::kEndpoint, 3>(n, 77, 3, Loss::kMse, 1e-4, false);
    for (bool scaled : {false, true}) {  // the fused loss's in-pass finish, small-D and general kernels
      test_loss<double, Target::kVelocity, 2>(n, 77, 2, Loss::kMse, 1e-10, scaled, true);
      test_loss<double, Target::kEndpoint, 4>(n, 77, 4, Loss::kPseudoHuber, 1e-10, scaled, true);
      test_loss<double, Target::kVelocity>(n, 9, 300, Loss::kPseudoHuber, 1e-10, scaled, true);
      test_loss<float, Target::kEndpoint>(n, 9, 37, Loss::kMse, 1e-4, scaled, true);
    }
    for (bool scaled : {false, true}) {
      test_loss<double, Target::kVelocity>(n, 4, 600, Loss::kMse, 1e-10, scaled);
      test_loss<double, Target::kEndpoint>(n, 4, 600, Loss::kPseudoHuber, 1e-10, scaled);
      test_loss<float, Target::kVelocity>(n, 4, 600, Loss::kPseudoHuber, 1e-4, scaled);
      test_loss<float, Target::kEndpoint>(n, 4, 600, Loss::kMse, 1e-4, scaled);
    }
  }
  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "OK", failures);
  return failures ? 1 : 0;
}
