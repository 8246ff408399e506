// Unit tests of the CUDA kernels' torch- and CUDA-free part (bezier_cuda_tiles.h), run on the
// host: the work split visits every element exactly once, and the per-thread work of every
// thread of every block (after its block's weight slots are filled as stage_weights does) agrees
// with the naive float64 evaluation, on both the 16-byte-chunk and the element-wise paths.
// Not covered here (needs a GPU): shuffles and barriers of group_sum, the half types, launches.
#include <cstdint>
#include <vector>

#include "bezier_cuda_tiles.h"
#include "naive.h"

using namespace bezier;
using namespace bezier::gpu;
using namespace bezier_test;

namespace {

int vector_runs = 0, scalar_runs = 0;  // which chunk widths the emulated launches took

void check_tiling(int64_t B, int64_t D, int vector, int slot_bytes, int multiprocessors) {
  const RowTiling r = make_row_tiling(B, D, vector, slot_bytes, multiprocessors);
  bool ok = r.group >= 1 && r.group <= kThreads && (r.group & (r.group - 1)) == 0 && r.tiles_per_row >= 1 &&
            r.slot_bytes % 8 == 0 && r.shared_bytes() <= std::max(kSharedBudget, slot_bytes) &&
            r.blocks * r.tiles_per_block() >= r.tile_count() &&
            (r.blocks - 1) * r.tiles_per_block() < std::max<int64_t>(r.tile_count(), 1);
  std::vector<int> seen(B * D, 0);
  for (int64_t block = 0; block < r.blocks; ++block)
    for (int thread = 0; thread < kThreads; ++thread) {
      const int64_t tile = r.tile_of(block, thread);
      if (tile >= r.tile_count()) continue;
      const int64_t begin = r.chunk_begin(tile), end = r.chunk_end(tile);
      ok = ok && (r.chunks == 0 || begin < end) && end - begin <= static_cast<int64_t>(r.group) * kMaxItems &&
           r.slot_offset(thread) + r.slot_bytes <= r.shared_bytes();
      for (int64_t c = begin + r.lane_of(thread); c < end; c += r.group)
        for (int64_t d = c * vector; d < std::min(D, (c + 1) * vector); ++d) ++seen[r.sample(tile) * D + d];
    }
  const bool once = std::all_of(seen.begin(), seen.end(), [](int s) { return s == 1; });
  expect(ok && once, "RowTiling visits every element once, within its limits", static_cast<double>(B * D));
}

void test_tiling() {
  for (int64_t B : {1, 2, 3, 37, 300})
    for (int64_t D : {0, 1, 2, 5, 64, 1000, 3072, 5001})
      for (int vector : {1, 4, 8})
        for (int slot : {weight_slot_bytes(1, 1, 4), weight_slot_bytes(6, 64, 8)})
          for (int sms : {1, 132}) check_tiling(B, D, vector, slot, sms);
  // 64-bit: one row of 6.4e9 elements; its last tile ends exactly at the row's end
  const RowTiling r = make_row_tiling(1, 3LL << 31, 4, weight_slot_bytes(2, 3, 4), 132);
  const int64_t last = r.tile_count() - 1;
  expect(r.chunk_end(last) == r.chunks && r.chunk_begin(last) < r.chunks && r.chunks * 4 == (3LL << 31) &&
             r.blocks < (1LL << 31),
         "RowTiling of a 6.4e9-element row", static_cast<double>(r.blocks));
}

// The launches' alignment rule: 16-byte chunks only when every row of every operand is aligned.
void test_alignment() {
  Batch<float> even(3, 8, 3, 1), odd(3, 7, 3, 1), shifted(3, 8, 3, 1, 1), single(1, 7, 3, 1);
  expect(points_aligned(even.points(), 3), "stacked rows of 8 floats are aligned", 0);
  expect(!points_aligned(odd.points(), 3), "stacked rows of 7 floats are not", 0);
  expect(!points_aligned(shifted.points(), 3), "a buffer shifted by one float is not", 0);
  expect(points_aligned(single.points(), 1) == (single.points().guides_point_stride % 4 == 0),
         "one sample: only the point stride of several guides matters", 0);
}

// Runs f(tile, lane, w) for every thread of every block, after the block's lane-0 threads have
// filled their tiles' weight slots, like stage_weights on the device.
template <typename Acc, typename F>
void run_blocks(const RowTiling& r, const BinomialRows& rows, const OrderList& orders, const std::vector<double>& t, F&& f) {
  std::vector<unsigned char> shared(r.shared_bytes());
  const Column times{nullptr, t.data()};
  for (int64_t block = 0; block < r.blocks; ++block) {
    for (int pass = 0; pass < 2; ++pass)
      for (int thread = 0; thread < kThreads; ++thread) {
        const int64_t tile = r.tile_of(block, thread);
        if (tile >= r.tile_count()) continue;
        unsigned char* slot = shared.data() + r.slot_offset(thread);
        Acc* w = reinterpret_cast<Acc*>(slot + kScratchBytes);
        if (pass == 0 && r.lane_of(thread) == 0)
          tile_weights(rows, orders, times[r.sample(tile)], reinterpret_cast<double*>(slot), w);
        if (pass == 1) f(tile, r.lane_of(thread), w);
      }
  }
}

// Calls run(std::integral_constant<int, V>{}) with the chunk width a launch would choose.
template <typename T, typename F>
void with_width(bool aligned, F&& run) {
  if (aligned) {
    ++vector_runs;
    run(std::integral_constant<int, static_cast<int>(16 / sizeof(T))>{});
  } else {
    ++scalar_runs;
    run(std::integral_constant<int, 1>{});
  }
}

std::vector<double> basis_derivatives(int n, int k, double t) {  // d^k/dt^k of each b_{i,n}
  std::vector<double> w(n + 1);
  for (int i = 0; i <= n; ++i) {
    std::vector<double> e(n + 1, 0.0);
    e[i] = 1.0;
    w[i] = naive_derivative(e, k, t);
  }
  return w;
}

// Sizes and layout of a test batch (see Batch).
struct Layout {
  int64_t B, D, offset, stride;
};

template <typename T, int K>
void test_path(int n, Layout layout, double tol) {
  using Acc = acc_t<T>;
  const int64_t B = layout.B, D = layout.D;
  const Batch<T> batch(B, D, n, 31 * n + static_cast<unsigned>(D), layout.offset, layout.stride);
  const auto P = batch.points();
  const int all_orders[3] = {2, 0, 1};
  OrderList orders, points_and_next;
  for (int k = 0; k < K; ++k) {
    orders.push(all_orders[k]);
    points_and_next.push(all_orders[k]);
  }
  for (int k = 0; k < K; ++k) points_and_next.push(all_orders[k] + 1);
  BinomialRows rows;
  fill_binomial_rows(n, rows);
  // forward, then backward with random output gradients; one buffer per order
  std::vector<std::vector<T>> out(K, std::vector<T>(B * D)), grad(K, std::vector<T>(B * D));
  std::vector<T> gx0(B * D), gx1(B * D), gg(B * (n - 1) * D);
  std::mt19937 rng(7);
  std::normal_distribution<double> normal;
  T* out_rows[3];
  const T* grad_rows[3];
  bool aligned = points_aligned(P, B);
  for (int k = 0; k < K; ++k) {
    for (auto& g : grad[k]) g = static_cast<T>(normal(rng));
    out_rows[k] = out[k].data();
    grad_rows[k] = grad[k].data();
    aligned = aligned && rows_aligned(out_rows[k], B, D) && rows_aligned(grad_rows[k], B, D);
  }
  const ControlPoints<T> GP{gx0.data(), gx1.data(), gg.data(), D, D, (n - 1) * D, D, n};
  aligned = aligned && points_aligned(GP, B);
  std::vector<double> dt(B);
  with_width<T>(aligned, [&](auto width) {
    constexpr int V = decltype(width)::value;
    const RowTiling r = make_row_tiling(B, D, V, weight_slot_bytes(K, n, sizeof(Acc)), 4);
    run_blocks<Acc>(r, rows, orders, batch.t, [&](int64_t tile, int lane, const Acc* w) {
      path_forward_thread<T, K, V>(r, tile, lane, P, w, out_rows);
    });
    const RowTiling rb = make_row_tiling(B, D, V, weight_slot_bytes(2 * K, n, sizeof(Acc)), 4);
    std::vector<double> partial(rb.tile_count(), 0.0);
    run_blocks<Acc>(rb, rows, points_and_next, batch.t, [&](int64_t tile, int lane, const Acc* w) {
      partial[tile] += path_backward_thread<T, K, V>(rb, tile, lane, P, w, w + K * (n + 1), grad_rows, GP);
    });
    for (int64_t b = 0; b < B; ++b) dt[b] = sum_tiles(partial.data(), b, rb.tiles_per_row);
  });

  double err = 0, scale = 1, gerr = 0, terr = 0;
  for (int64_t b = 0; b < B; ++b) {
    double dt_ref = 0, dt_scale = 1;
    std::vector<std::vector<double>> basis(K);
    for (int k = 0; k < K; ++k) basis[k] = basis_derivatives(n, orders[k], batch.t[b]);
    for (int64_t d = 0; d < D; ++d) {
      const auto p = batch.column(b, d);
      for (int k = 0; k < K; ++k) {
        const double ref = naive_derivative(p, orders[k], batch.t[b]);
        err = std::max(err, std::fabs(static_cast<double>(out_rows[k][b * D + d]) - ref));
        scale = std::max(scale, std::fabs(ref));
        const double next = naive_derivative(p, orders[k] + 1, batch.t[b]);
        dt_ref += static_cast<double>(grad_rows[k][b * D + d]) * next;
        dt_scale += std::fabs(static_cast<double>(grad_rows[k][b * D + d]) * next);
      }
      for (int i = 0; i <= n; ++i) {
        double ref = 0;
        for (int k = 0; k < K; ++k) ref += basis[k][i] * static_cast<double>(grad_rows[k][b * D + d]);
        gerr = std::max(gerr, rel(static_cast<double>(GP.point(b, i)[d]), ref, std::max(1.0, std::fabs(ref))));
      }
    }
    terr = std::max(terr, rel(dt[b], dt_ref, dt_scale));
  }
  expect(err <= tol * scale, "path_forward_thread vs naive", err / scale);
  expect(gerr <= tol, "path_backward_thread points vs naive", gerr);
  expect(terr <= tol, "path_backward_thread t vs naive", terr);
  if (K >= 2 && B > 2) {  // exact endpoints: order 0 is the second output
    bool exact = true;
    for (int64_t d = 0; d < D; ++d)
      exact = exact && out_rows[1][d] == batch.at(0, 0, d) && out_rows[1][D + d] == batch.at(1, n, d);
    expect(exact, "B(0) = P0 and B(1) = Pn exactly", 0);
  }
}

template <typename T, Target target>
void test_loss(int n, Layout layout, Loss kind, double tol) {
  using Acc = acc_t<T>;
  const int64_t B = layout.B, D = layout.D;
  const Batch<T> batch(B, D, n, 5 * n + 3, layout.offset, layout.stride);
  const auto P = batch.points();
  const int64_t pred_stride = layout.stride < 0 ? D : layout.stride;  // pred: like the points
  std::vector<T> pred(B * pred_stride), resid(B * D);
  std::mt19937 rng(3);
  std::normal_distribution<double> normal;
  for (auto& v : pred) v = static_cast<T>(normal(rng));
  std::vector<Acc> loss(B), scale(B), dt(B);
  const double c = 0.3;
  const auto out_scale = sample_factors(B, true, 0.5, 0.002), row_weight = sample_factors(B, true, 1.5, -0.001);
  const LossOutputs<Acc> outputs{kind, c, loss.data(), scale.data(), dt.data(), row_weight.data()};
  const OrderList orders = target == Target::kVelocity ? OrderList().push(1).push(2) : OrderList().push(0).push(1);
  BinomialRows rows;
  fill_binomial_rows(n, rows);
  const bool aligned = points_aligned(P, B) && rows_aligned(pred.data(), B, pred_stride) &&
                       rows_aligned(resid.data(), B, D);
  with_width<T>(aligned, [&](auto width) {
    constexpr int V = decltype(width)::value;
    const RowTiling r = make_row_tiling(B, D, V, weight_slot_bytes(2, n, sizeof(Acc)), 4);
    std::vector<double> partial(2 * r.tile_count(), 0.0);
    run_blocks<Acc>(r, rows, orders, batch.t, [&](int64_t tile, int lane, const Acc* w) {
      Acc sq = 0, rdt = 0;
      const int64_t b = r.sample(tile);
      loss_forward_thread<T, target, V>(r, tile, lane, P, w, batch.t[b], pred.data(), pred_stride,
                                        static_cast<Acc>(out_scale[b]), resid.data(), sq, rdt);
      partial[tile] += sq;
      partial[r.tile_count() + tile] += rdt;
    });
    for (int64_t b = 0; b < B; ++b)
      outputs.write(b, D, sum_tiles(partial.data(), b, r.tiles_per_row),
                    sum_tiles(partial.data() + r.tile_count(), b, r.tiles_per_row));
  });
  const double worst = loss_error(batch, target, kind, c, pred, pred_stride, resid, loss, scale, dt, out_scale, row_weight);
  expect(worst <= tol, "loss_forward_thread vs naive", worst);
}

// The whole loss (fused_loss) as its kernels do it: the pass with mult_before_sums as r's factor,
// each sample finished from its row's sums (FusedLossOutputs::finish: the main kernel's lead lanes,
// or the finish kernel), then scale_row_thread with the factor finish returns. Weights float32 at
// stride 2 (read through Column), a mean's factor 1 / B, reduction "none" (value[b] = m_b l_b).
template <typename T, Target target>
void test_fused_loss(int n, Layout layout, Loss kind, bool gradient, double tol) {
  using Acc = acc_t<T>;
  const int64_t B = layout.B, D = layout.D;
  const Batch<T> batch(B, D, n, 7 * n + 1, layout.offset, layout.stride);
  const auto P = batch.points();
  const int64_t pred_stride = layout.stride < 0 ? D : layout.stride;
  std::vector<T> pred(B * pred_stride), out(B * D), value(B);
  std::mt19937 rng(5);
  std::normal_distribution<double> normal;
  for (auto& v : pred) v = static_cast<T>(normal(rng));
  const auto weights = sample_factors(B, true, 1.5, -0.001);
  std::vector<float> weight_buffer(2 * B);
  for (int64_t b = 0; b < B; ++b) weight_buffer[2 * b] = static_cast<float>(weights[b]);
  const double mean_factor = 1.0 / static_cast<double>(B);
  std::vector<Acc> weight_grad(B), scale(B), dt(B);
  const double c = 0.3;
  const FusedLossOutputs<T> o{kind, c, Column{weight_buffer.data(), nullptr, 2}, mean_factor, gradient, true,
                              value.data(), weight_grad.data(), scale.data(), dt.data()};
  const OrderList orders = target == Target::kVelocity ? OrderList().push(1).push(2) : OrderList().push(0).push(1);
  BinomialRows rows;
  fill_binomial_rows(n, rows);
  const bool aligned = points_aligned(P, B) && rows_aligned(pred.data(), B, pred_stride) && rows_aligned(out.data(), B, D);
  bool untouched = true;  // rows whose factor was known before the sums get 1 from finish
  with_width<T>(aligned, [&](auto width) {
    constexpr int V = decltype(width)::value;
    const RowTiling r = make_row_tiling(B, D, V, weight_slot_bytes(2, n, sizeof(Acc)), 4);
    std::vector<double> partial(2 * r.tile_count(), 0.0), mult(B);
    run_blocks<Acc>(r, rows, orders, batch.t, [&](int64_t tile, int lane, const Acc* w) {
      Acc sq = 0, rdt = 0;
      const int64_t b = r.sample(tile);
      const double first = o.template mult_before_sums<target>(b, D, batch.t[b]);
      loss_forward_thread<T, target, V>(r, tile, lane, P, w, batch.t[b], pred.data(), pred_stride,
                                        static_cast<Acc>(first), out.data(), sq, rdt);
      partial[tile] += sq;
      partial[r.tile_count() + tile] += rdt;
    });
    for (int64_t b = 0; b < B; ++b) {
      mult[b] = o.template finish<target>(b, D, batch.t[b], sum_tiles(partial.data(), b, r.tiles_per_row),
                                          sum_tiles(partial.data() + r.tile_count(), b, r.tiles_per_row))
                    .mult;
      untouched = untouched && (mult[b] == 1.0 || (gradient && kind == Loss::kPseudoHuber));
    }
    run_blocks<Acc>(r, rows, orders, batch.t, [&](int64_t tile, int lane, const Acc*) {
      scale_row_thread<T, V>(r, tile, lane, static_cast<Acc>(mult[r.sample(tile)]), out.data());
    });
  });
  // loss_error's reference: l_b (weight_grad / mean_factor), scale and dt with m_b = weight_b / B
  std::vector<Acc> loss(B);
  std::vector<double> m(B), ones(B, 1.0);
  double value_err = 0.0;
  for (int64_t b = 0; b < B; ++b) {
    loss[b] = static_cast<Acc>(static_cast<double>(weight_grad[b]) / mean_factor);
    m[b] = static_cast<double>(static_cast<float>(weights[b])) * mean_factor;
    const double term = m[b] * static_cast<double>(loss[b]);
    value_err = std::max(value_err, rel(static_cast<double>(value[b]), term, std::max(1e-6, std::fabs(term))));
  }
  const double worst = loss_error(batch, target, kind, c, pred, pred_stride, out, loss, scale, dt, ones, m, gradient);
  expect(worst <= tol, "fused loss (kernels' per-thread work and finish) vs naive", worst);
  expect(value_err <= tol, "fused loss value[b] = m_b l_b", value_err);
  expect(untouched, "finish leaves no factor to apply but pseudo-Huber's gradient", 0);
}

void test_columns() {
  const double f64[6] = {1, -1, 2, -1, 3, -1};
  const float f32[3] = {0.5f, 0.25f, 0.125f};
  const Column strided{nullptr, f64, 2}, contiguous{f32, nullptr, 1}, none{};
  expect(strided[2] == 3.0 && contiguous[1] == 0.25 && none[7] == 1.0, "Column reads its dtype and stride", 0);
  float g32[2] = {0, 0};
  double g64[2] = {0, 0};
  OutColumn o32, o64, absent;
  o32.f32 = g32;
  o64.f64 = g64;
  o32.store(1, 0.75);
  o64.store(1, 1.0 / 3.0);
  expect(g32[1] == 0.75f && g64[1] == 1.0 / 3.0 && o32 && o64 && !absent, "OutColumn stores in its dtype", 0);
}

}  // namespace

int main() {
  test_tiling();
  test_alignment();
  test_columns();
  // (B, D, offset, stride): aligned rows; rows of odd length; a buffer shifted by one element;
  // one sample whose padded rows are aligned, with a short last chunk; many short rows per
  // block; long rows split into several tiles; no features
  const Layout layouts[] = {{5, 64, 0, -1}, {5, 37, 0, -1}, {4, 64, 1, -1}, {1, 1003, 0, 1004},
                            {300, 3, 0, -1}, {3, 20000, 0, -1}, {3, 0, 0, -1}};
  for (int n : {1, 2, 3, 7, 64}) {
    for (const Layout& layout : layouts) {
      if (n == 64 && layout.D > 1100) continue;  // keeps the naive reference quick
      test_path<float, 3>(n, layout, 2e-5);
      test_path<float, 1>(n, layout, 2e-5);
      test_path<double, 2>(n, layout, 1e-11);
      test_loss<float, Target::kVelocity>(n, layout, Loss::kPseudoHuber, 1e-4);
      test_loss<double, Target::kEndpoint>(n, layout, Loss::kPseudoHuber, 1e-10);
      if (layout.D > 0) test_loss<double, Target::kVelocity>(n, layout, Loss::kMse, 1e-10);
      if (layout.D > 0) test_loss<float, Target::kEndpoint>(n, layout, Loss::kMse, 1e-4);
      if (layout.D == 0) continue;  // the reference's mse of no features is NaN
      for (bool gradient : {true, false}) {
        test_fused_loss<double, Target::kVelocity>(n, layout, Loss::kPseudoHuber, gradient, 1e-10);
        test_fused_loss<double, Target::kEndpoint>(n, layout, Loss::kMse, gradient, 1e-10);
        test_fused_loss<float, Target::kEndpoint>(n, layout, Loss::kPseudoHuber, gradient, 1e-4);
        test_fused_loss<float, Target::kVelocity>(n, layout, Loss::kMse, gradient, 1e-4);
      }
    }
  }
  expect(vector_runs > 0 && scalar_runs > 0, "both chunk widths were exercised", vector_runs + scalar_runs);
  std::printf("%s: %d failure(s) (%d 16-byte-chunk and %d element-wise emulated launches)\n",
              failures ? "FAILED" : "OK", failures, vector_runs, scalar_runs);
  return failures ? 1 : 0;
}
