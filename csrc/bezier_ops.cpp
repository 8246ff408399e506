// Torch glue for the compiled backends: op schemas (TORCH_LIBRARY) and the CPU implementations
// (TORCH_LIBRARY_IMPL for CPU). The Python module itself is csrc/module.cpp.
//
// Shapes follow the Python layer, which validates user input (docs/spec.md section 5) and flattens
// feature dims: x0, x1, pred are [B, D]; guides [B, n-1, D] or None; t [B]. Features must have
// unit stride; batch and point strides are free. The checks here only guard direct op calls.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <memory>
#include <vector>

#include "bezier_cpu.h"
#include "bezier_ops.h"

namespace bezier {

ControlPointsShape check_control_points(const at::Tensor& x0, const at::Tensor& x1,
                                        const std::optional<at::Tensor>& guides,
                                        const at::Tensor& t) {
  TORCH_CHECK(x0.dim() == 2 && x1.sizes() == x0.sizes(), "bezier_kernels: x0 and x1 must be [B, D]");
  TORCH_CHECK(x1.scalar_type() == x0.scalar_type() && x1.device() == x0.device(),
              "bezier_kernels: x0 and x1 must share dtype and device");
  TORCH_CHECK(t.dim() == 1 && t.size(0) == x0.size(0) && at::isFloatingType(t.scalar_type()) &&
                  t.device() == x0.device(),
              "bezier_kernels: t must be a floating [B] tensor on x0's device");
  const int64_t D = x0.size(1);
  auto unit_features = [D](const at::Tensor& x) { return D <= 1 || x.stride(-1) == 1; };
  TORCH_CHECK(unit_features(x0) && unit_features(x1), "bezier_kernels: features must have unit stride");
  int degree = 1;
  if (guides.has_value()) {
    const at::Tensor& g = *guides;
    TORCH_CHECK(g.dim() == 3 && g.size(0) == x0.size(0) && g.size(2) == D,
                "bezier_kernels: guides must be [B, n-1, D]");
    TORCH_CHECK(g.scalar_type() == x0.scalar_type() && g.device() == x0.device(),
                "bezier_kernels: guides must share x0's dtype and device");
    TORCH_CHECK(g.size(1) == 0 || unit_features(g), "bezier_kernels: guide features must have unit stride");
    degree = static_cast<int>(g.size(1)) + 1;
  }
  TORCH_CHECK(degree >= 1 && degree <= kMaxDegree, "bezier_kernels: degree ", degree,
              " is outside the compiled kernels' range 1..", kMaxDegree);
  return {x0.size(0), D, degree};
}

std::vector<int> check_orders(at::IntArrayRef orders, int max_order) {
  TORCH_CHECK(!orders.empty() && orders.size() <= 3, "bezier_kernels: orders must hold 1 to 3 entries");
  std::vector<int> out;
  for (int64_t k : orders) {
    TORCH_CHECK(k >= 0 && k <= max_order, "bezier_kernels: order ", k, " is not in 0..", max_order);
    TORCH_CHECK(std::find(out.begin(), out.end(), static_cast<int>(k)) == out.end(),
                "bezier_kernels: orders must be distinct");
    out.push_back(static_cast<int>(k));
  }
  return out;
}

Target parse_target(c10::string_view target) {
  if (target == "velocity") return Target::kVelocity;
  if (target == "endpoint") return Target::kEndpoint;
  TORCH_CHECK(false, "bezier_kernels: target must be 'velocity' or 'endpoint', got '", target, "'");
}

Loss parse_loss(c10::string_view loss) {
  if (loss == "mse") return Loss::kMse;
  if (loss == "pseudo_huber") return Loss::kPseudoHuber;
  TORCH_CHECK(false, "bezier_kernels: loss must be 'mse' or 'pseudo_huber', got '", loss, "'");
}

Reduction parse_reduction(c10::string_view reduction) {
  if (reduction == "mean") return Reduction::kMean;
  if (reduction == "sum") return Reduction::kSum;
  if (reduction == "none") return Reduction::kNone;
  TORCH_CHECK(false, "bezier_kernels: reduction must be 'mean', 'sum' or 'none', got '", reduction, "'");
}

void check_weight(const std::optional<at::Tensor>& weight, const ControlPointsShape& shape, const at::Tensor& x0) {
  if (!weight.has_value()) return;
  const at::Tensor& w = *weight;
  TORCH_CHECK(w.dim() == 1 && w.size(0) == shape.batch && at::isFloatingType(w.scalar_type()) &&
                  w.device() == x0.device(),
              "bezier_kernels: weight must be a floating [B] tensor on x0's device");
}

FusedLossTensors empty_fused_loss_outputs(const at::Tensor& pred, const ControlPointsShape& shape, Reduction reduction,
                                          bool t_grad) {
  const auto acc = pred.options().dtype(at::toOpMathType(pred.scalar_type()));
  const int64_t B = shape.batch;
  at::Tensor value = reduction == Reduction::kNone ? at::empty({B}, pred.options()) : at::empty({}, pred.options());
  return {value, at::empty({B, shape.features}, pred.options()), at::empty({B}, acc), at::empty({B}, acc),
          at::empty({t_grad ? B : 0}, acc)};
}

void check_pred(const at::Tensor& pred, const at::Tensor& x0, const ControlPointsShape& shape) {
  TORCH_CHECK(pred.sizes() == x0.sizes() && pred.scalar_type() == x0.scalar_type() && pred.device() == x0.device() &&
                  (shape.features <= 1 || pred.stride(1) == 1),
              "bezier_kernels: pred must be [B, D] like x0, with unit feature stride");
}

FusedLossArgs check_fused_loss(const at::Tensor& pred, const at::Tensor& x0, const at::Tensor& x1,
                               const std::optional<at::Tensor>& guides, const at::Tensor& t,
                               const std::optional<at::Tensor>& weight, c10::string_view target,
                               c10::string_view loss, c10::string_view reduction) {
  const ControlPointsShape shape = check_control_points(x0, x1, guides, t);
  check_pred(pred, x0, shape);
  check_weight(weight, shape, x0);
  const Reduction red = parse_reduction(reduction);
  const double mean_factor = red == Reduction::kMean && shape.batch > 0 ? 1.0 / static_cast<double>(shape.batch) : 1.0;
  return {shape, parse_target(target), parse_loss(loss), red, mean_factor};
}

LossFactors check_loss_factors(const at::Tensor& row_weight, const std::optional<at::Tensor>& out_scale,
                               const at::Tensor& x0, const ControlPointsShape& shape) {
  auto check = [&](const at::Tensor& v, const char* name) {
    TORCH_CHECK(v.dim() == 1 && v.size(0) == shape.batch && v.scalar_type() == at::kDouble &&
                    v.device() == x0.device() && v.is_contiguous(),
                "bezier_kernels: ", name, " must be a contiguous float64 [B] tensor on x0's device");
    return v.const_data_ptr<double>();
  };
  return {check(row_weight, "row_weight"), out_scale.has_value() ? check(*out_scale, "out_scale") : nullptr};
}

std::vector<at::Tensor> check_grads(at::TensorList grads, const at::Tensor& x0, const ControlPointsShape& shape,
                                    size_t count) {
  TORCH_CHECK(grads.size() == count, "bezier_kernels: one grad per order");
  std::vector<at::Tensor> out;
  for (const auto& grad : grads) {
    TORCH_CHECK(grad.dim() == 2 && grad.size(0) == shape.batch && grad.size(1) == shape.features &&
                    grad.scalar_type() == x0.scalar_type() && grad.device() == x0.device(),
                "bezier_kernels: each grad must be [B, D] in x0's dtype, on its device");
    out.push_back(grad.contiguous());
  }
  return out;
}

PointGrads empty_point_grads(const at::Tensor& x0, const ControlPointsShape& shape, bool points_grad) {
  const int64_t B = shape.batch, D = shape.features;
  auto empty = [&](at::IntArrayRef size) { return at::empty(size, x0.options()); };
  if (!points_grad) return {empty({0}), empty({0}), empty({0})};
  return {empty({B, D}), empty({B, D}), shape.degree > 1 ? empty({B, shape.degree - 1, D}) : empty({0})};
}

LossTensors empty_loss_outputs(const at::Tensor& x0, const ControlPointsShape& shape) {
  const auto acc = x0.options().dtype(at::toOpMathType(x0.scalar_type()));
  const int64_t B = shape.batch;
  return {at::empty({B}, acc), at::empty({B, shape.features}, x0.options()), at::empty({B}, acc), at::empty({B}, acc)};
}

namespace {

// A floating [B] CPU tensor (any dtype, any stride) as float64 values, read in place: no op dispatched.
std::vector<double> cpu_doubles(const at::Tensor& v) {
  std::vector<double> out(static_cast<size_t>(v.size(0)));
  const int64_t stride = v.stride(0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.scalar_type(), "bezier_cpu_doubles", [&] {
    const scalar_t* p = v.const_data_ptr<scalar_t>();
    for (size_t b = 0; b < out.size(); ++b) out[b] = static_cast<double>(p[static_cast<int64_t>(b) * stride]);
  });
  return out;
}

const auto at_parallel_for = [](int64_t begin, int64_t end, int64_t grain, const auto& f) {
  at::parallel_for(begin, end, grain, f);
};

std::vector<at::Tensor> path_fwd_cpu(const at::Tensor& x0, const at::Tensor& x1,
                                     const std::optional<at::Tensor>& guides, const at::Tensor& t,
                                     at::IntArrayRef orders) {
  const auto shape = check_control_points(x0, x1, guides, t);
  const auto ords = check_orders(orders, 2);
  std::vector<at::Tensor> out;
  for (size_t k = 0; k < ords.size(); ++k) out.push_back(at::empty({shape.batch, shape.features}, x0.options()));
  const std::vector<double> t64 = cpu_doubles(t);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x0.scalar_type(), "bezier_path_fwd", [&] {
    using Acc = at::opmath_type<scalar_t>;
    const auto P = control_points<scalar_t>(x0, x1, guides, shape.degree);
    scalar_t* out_ptrs[3];
    for (size_t k = 0; k < out.size(); ++k) out_ptrs[k] = out[k].mutable_data_ptr<scalar_t>();
    dispatch_order_count(static_cast<int>(ords.size()), [&](auto K) {
      cpu::dispatch_features<scalar_t>(shape.features, [&](auto kD) {
        cpu::path_forward<scalar_t, Acc, decltype(K)::value, decltype(kD)::value>(
            P, t64.data(), shape.batch, shape.features, ords.data(), out_ptrs, at_parallel_for);
      });
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> path_bwd_cpu(
    at::TensorList grads, const at::Tensor& x0, const at::Tensor& x1,
    const std::optional<at::Tensor>& guides, const at::Tensor& t, at::IntArrayRef orders,
    bool points_grad, bool t_grad) {
  const auto shape = check_control_points(x0, x1, guides, t);
  const auto ords = check_orders(orders, 2);
  const int64_t B = shape.batch, D = shape.features;
  const std::vector<at::Tensor> g = check_grads(grads, x0, shape, ords.size());
  const std::vector<double> t64 = cpu_doubles(t);
  PointGrads point_grads = empty_point_grads(x0, shape, points_grad);
  std::vector<double> partial(t_grad ? cpu::Tiling(B, D).count() : 0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x0.scalar_type(), "bezier_path_bwd", [&] {
    using Acc = at::opmath_type<scalar_t>;
    const auto P = control_points<scalar_t>(x0, x1, guides, shape.degree);
    ControlPoints<scalar_t> GP{};
    if (points_grad) GP = gradient_points<scalar_t>(point_grads, shape);
    const scalar_t* grad_ptrs[3];
    for (size_t k = 0; k < g.size(); ++k) grad_ptrs[k] = g[k].const_data_ptr<scalar_t>();
    dispatch_order_count(static_cast<int>(ords.size()), [&](auto K) {
      cpu::path_backward<scalar_t, Acc, decltype(K)::value>(
          P, t64.data(), B, D, ords.data(), grad_ptrs, points_grad ? &GP : nullptr,
          t_grad ? partial.data() : nullptr, at_parallel_for);
    });
  });
  at::Tensor gt = at::empty({t_grad ? B : 0}, t.options());
  if (t_grad) {
    std::vector<double> sums(B);
    cpu::reduce_tile_partials(partial.data(), B, D, sums.data(), at_parallel_for);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "bezier_path_bwd_t", [&] {
      scalar_t* out = gt.mutable_data_ptr<scalar_t>();
      for (int64_t b = 0; b < B; ++b) out[b] = static_cast<scalar_t>(sums[b]);
    });
  }
  return {point_grads.x0, point_grads.x1, point_grads.guides, gt};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> loss_fwd_cpu(
    const at::Tensor& pred, const at::Tensor& x0, const at::Tensor& x1,
    const std::optional<at::Tensor>& guides, const at::Tensor& t, const at::Tensor& row_weight,
    const std::optional<at::Tensor>& out_scale, c10::string_view target, c10::string_view loss, double huber_c) {
  const auto shape = check_control_points(x0, x1, guides, t);
  check_pred(pred, x0, shape);
  const LossFactors factors = check_loss_factors(row_weight, out_scale, x0, shape);
  const Target tgt = parse_target(target);
  const Loss kind = parse_loss(loss);
  const int64_t B = shape.batch, D = shape.features;
  const std::vector<double> t64 = cpu_doubles(t);
  LossTensors out = empty_loss_outputs(x0, shape);
  const int64_t tiles = cpu::Tiling(B, D).count();
  // Scratch for per-tile partial sums (uninitialised; every tile writes its entry).
  const auto f64 = x0.options().dtype(at::kDouble);
  at::Tensor sq_scratch = at::empty({tiles}, f64), rdt_scratch = at::empty({tiles}, f64);
  double* sq_partial = sq_scratch.mutable_data_ptr<double>();
  double* rdt_partial = rdt_scratch.mutable_data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x0.scalar_type(), "bezier_loss_fwd", [&] {
    using Acc = at::opmath_type<scalar_t>;
    const auto P = control_points<scalar_t>(x0, x1, guides, shape.degree);
    auto run = [&](auto target_constant) {
      cpu::loss_forward<scalar_t, Acc, decltype(target_constant)::value>(
          P, t64.data(), B, D, pred.const_data_ptr<scalar_t>(), pred.stride(0), factors.out_scale, nullptr,
          out.resid.mutable_data_ptr<scalar_t>(), sq_partial, rdt_partial, at_parallel_for);
    };
    if (tgt == Target::kVelocity)
      run(std::integral_constant<Target, Target::kVelocity>{});
    else
      run(std::integral_constant<Target, Target::kEndpoint>{});
    cpu::loss_finish(loss_outputs<Acc>(out, kind, huber_c, factors), B, D, sq_partial, rdt_partial, at_parallel_for);
  });
  return {out.loss, out.resid, out.scale, out.dt};
}

// The whole loss in one op: m_b (the weight over B for a mean), the output's factor and the
// per-sample results come from the kernel's pass (cpu::LossFinish); the reduction is a loop here;
// the kernels read t in place; only the outputs are allocated.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_loss_cpu(
    const at::Tensor& pred, const at::Tensor& x0, const at::Tensor& x1, const std::optional<at::Tensor>& guides,
    const at::Tensor& t, const std::optional<at::Tensor>& weight, c10::string_view target, c10::string_view loss,
    double huber_c, c10::string_view reduction, bool residual, bool t_grad) {
  const FusedLossArgs args = check_fused_loss(pred, x0, x1, guides, t, weight, target, loss, reduction);
  const int64_t B = args.shape.batch, D = args.shape.features;
  const std::vector<double> t64 = cpu_doubles(t);
  const std::vector<double> row_weight = weight.has_value() ? cpu_doubles(*weight) : std::vector<double>();
  FusedLossTensors o = empty_fused_loss_outputs(pred, args.shape, args.reduction, t_grad);
  const cpu::Tiling tiling(B, D);
  const bool multi_tile = tiling.tiles_per_sample > 1;  // per-tile partials, then loss_finish
  const std::unique_ptr<double[]> partials(multi_tile ? new double[2 * tiling.count()] : nullptr);
  double* const sq = partials.get();
  double* const rdt = multi_tile ? sq + tiling.count() : nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x0.scalar_type(), "bezier_fused_loss", [&] {
    using Acc = at::opmath_type<scalar_t>;
    const auto P = control_points<scalar_t>(x0, x1, guides, args.shape.degree);
    scalar_t* out = o.out.mutable_data_ptr<scalar_t>();
    Acc* per_sample = o.weight_grad.mutable_data_ptr<Acc>();  // l_b, until the reduction below
    const Acc* scale = o.scale.mutable_data_ptr<Acc>();
    const cpu::LossFinish<Acc> finish{
        LossOutputs<Acc>{args.loss, huber_c, per_sample, o.scale.mutable_data_ptr<Acc>(),
                         t_grad ? o.dt.mutable_data_ptr<Acc>() : nullptr, row_weight.empty() ? nullptr : row_weight.data(),
                         args.mean_factor},
        !residual};
    auto run = [&](auto target_constant, auto dt_constant) {
      cpu::dispatch_features<scalar_t>(D, [&](auto kD) {
        cpu::loss_forward<scalar_t, Acc, decltype(target_constant)::value, decltype(dt_constant)::value,
                          decltype(kD)::value>(P, t64.data(), B, D, pred.const_data_ptr<scalar_t>(), pred.stride(0),
                                               nullptr, &finish, out, sq, rdt, at_parallel_for);
      });
    };
    auto with_dt = [&](auto target_constant) {
      if (t_grad)
        run(target_constant, std::true_type{});
      else
        run(target_constant, std::false_type{});
    };
    if (args.target == Target::kVelocity)
      with_dt(std::integral_constant<Target, Target::kVelocity>{});
    else
      with_dt(std::integral_constant<Target, Target::kEndpoint>{});
    if (multi_tile) {
      cpu::loss_finish(finish.outputs, B, D, sq, rdt, at_parallel_for);
      if (!residual && args.loss == Loss::kPseudoHuber) {  // the row's factor needs its whole norm: a second pass
        at::parallel_for(0, B, std::max<int64_t>(1, 16384 / D), [&](int64_t begin, int64_t end) {
          for (int64_t b = begin; b < end; ++b) {
            const Acc f = static_cast<Acc>(static_cast<double>(scale[b]) * pred_factor(args.target, t64[b]));
            scalar_t* __restrict__ row = out + b * D;
            for (int64_t d = 0; d < D; ++d) row[d] = static_cast<scalar_t>(f * static_cast<Acc>(row[d]));
          }
        });
      }
    }
    scalar_t* value = o.value.mutable_data_ptr<scalar_t>();
    const double factor = args.mean_factor;
    if (args.reduction == Reduction::kNone) {
      for (int64_t b = 0; b < B; ++b) value[b] = static_cast<scalar_t>(finish.outputs.weight(b) * per_sample[b]);
    } else {
      // eight running sums in a fixed order: one sum would be a chain of B dependent additions
      double lane[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
      int64_t b = 0;
      for (; b + 8 <= B; b += 8)
        for (int j = 0; j < 8; ++j) lane[j] += finish.outputs.weight(b + j) * static_cast<double>(per_sample[b + j]);
      for (; b < B; ++b) lane[b & 7] += finish.outputs.weight(b) * static_cast<double>(per_sample[b]);
      const double total = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
      value[0] = static_cast<scalar_t>(args.reduction == Reduction::kMean && B == 0 ? std::nan("") : total);
    }
    for (int64_t b = 0; b < B; ++b) per_sample[b] = static_cast<Acc>(factor * static_cast<double>(per_sample[b]));  // dL/dweight_b
  });
  return {o.value, o.out, o.weight_grad, o.scale, o.dt};
}

}  // namespace

}  // namespace bezier

TORCH_LIBRARY(bezier_kernels, m) {
  m.def("path_fwd(Tensor x0, Tensor x1, Tensor? guides, Tensor t, int[] orders) -> Tensor[]");
  m.def(
      "path_bwd(Tensor[] grads, Tensor x0, Tensor x1, Tensor? guides, Tensor t, int[] orders, "
      "bool points_grad, bool t_grad) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "loss_fwd(Tensor pred, Tensor x0, Tensor x1, Tensor? guides, Tensor t, Tensor row_weight, Tensor? out_scale, "
      "str target, str loss, "
      "float huber_c) -> (Tensor, Tensor, Tensor, Tensor)");
  // The whole loss (its autograd in csrc/bezier_autograd.cpp): (value, out, weight_grad, scale, dt),
  // see FusedLossTensors in bezier_ops.h.
  m.def(
      "fused_loss(Tensor pred, Tensor x0, Tensor x1, Tensor? guides, Tensor t, Tensor? weight, str target, "
      "str loss, float huber_c, str reduction, bool residual, bool t_grad) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(bezier_kernels, CPU, m) {
  m.impl("path_fwd", &bezier::path_fwd_cpu);
  m.impl("path_bwd", &bezier::path_bwd_cpu);
  m.impl("loss_fwd", &bezier::loss_fwd_cpu);
  m.impl("fused_loss", &bezier::fused_loss_cpu);
}
