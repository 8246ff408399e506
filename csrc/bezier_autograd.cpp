// Autograd of the compiled backends' ops, in C++ (TORCH_LIBRARY_IMPL for the Autograd key), so a
// call costs no Python autograd layer. Each forward re-dispatches below autograd to the device
// kernel (CPU or CUDA; the fake kernels under tracing); the backwards call registered ops or
// plain ATen ops, so torch.compile and opcheck trace them like any other op.
//
//   path_fwd    backward: path_bwd for the orders whose outputs received a gradient
//   fused_loss  backward: dL/dpred is the saved output itself for a unit upstream gradient (eager CPU),
//               else one multiplication; x0, x1, guides (residual=True) through path_bwd
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/TorchDispatchModeTLS.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <vector>

namespace bezier {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using PathFwd = std::vector<Tensor>(const Tensor&, const Tensor&, const std::optional<Tensor>&, const Tensor&,
                                    at::IntArrayRef);
using PathBwd = std::tuple<Tensor, Tensor, Tensor, Tensor>(at::TensorList, const Tensor&, const Tensor&,
                                                           const std::optional<Tensor>&, const Tensor&,
                                                           at::IntArrayRef, bool, bool);
using FusedLoss = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>(
    const Tensor&, const Tensor&, const Tensor&, const std::optional<Tensor>&, const Tensor&,
    const std::optional<Tensor>&, c10::string_view, c10::string_view, double, c10::string_view, bool, bool);

template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

const c10::TypedOperatorHandle<PathFwd>& path_fwd_op() {
  static const auto op = find_op<PathFwd>("bezier_kernels::path_fwd");
  return op;
}
const c10::TypedOperatorHandle<PathBwd>& path_bwd_op() {
  static const auto op = find_op<PathBwd>("bezier_kernels::path_bwd");
  return op;
}
const c10::TypedOperatorHandle<FusedLoss>& fused_loss_op() {
  static const auto op = find_op<FusedLoss>("bezier_kernels::fused_loss");
  return op;
}

std::optional<Tensor> maybe(const Tensor& x) { return x.defined() ? std::optional<Tensor>(x) : std::nullopt; }

// path_bwd's guides gradient in the guides' own shape: [B, 0, D] zeros for degree-1 paths given
// empty guides (path_bwd returns [0] there).
Tensor guides_grad(const Tensor& gguides, const Tensor& guides) {
  return gguides.sizes() == guides.sizes() ? gguides : at::zeros_like(guides);
}

// A dense CPU tensor outside any tracing, dispatch mode or functorch transform: safe to read in place.
bool plain_cpu(const Tensor& x) {
  const c10::DispatchKeySet wrapped({c10::DispatchKey::Python, c10::DispatchKey::PythonTLSSnapshot,
                                     c10::DispatchKey::Functionalize, c10::DispatchKey::FuncTorchBatched,
                                     c10::DispatchKey::FuncTorchGradWrapper});
  return x.device().is_cpu() && x.layout() == at::kStrided && !x.key_set().has_any(wrapped) && !x.is_conj() &&
         !x.is_neg() && x.has_storage() && c10::impl::TorchDispatchModeTLS::stack_len() == 0;
}

// Every entry of a plain CPU gradient ([] or [B], any stride) is exactly 1: the usual loss.backward().
bool all_ones(const Tensor& grad) {
  if (!plain_cpu(grad) || grad.dim() > 1) return false;
  bool ones = true;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "bezier_all_ones", [&] {
    const scalar_t* p = grad.const_data_ptr<scalar_t>();
    const int64_t n = grad.numel(), stride = grad.dim() == 0 ? 0 : grad.stride(0);
    for (int64_t i = 0; i < n && ones; ++i) ones = static_cast<double>(p[i * stride]) == 1.0;
  });
  return ones;
}

struct PathFunction : public torch::autograd::Function<PathFunction> {
  static variable_list forward(AutogradContext* ctx, c10::DispatchKeySet ks, const Tensor& x0, const Tensor& x1,
                               const std::optional<Tensor>& guides, const Tensor& t, at::IntArrayRef orders) {
    ctx->set_materialize_grads(false);  // outputs nobody used get no gradient: their order is skipped
    ctx->save_for_backward({x0, x1, guides.value_or(Tensor()), t});
    ctx->saved_data["orders"] = orders.vec();
    at::AutoDispatchBelowADInplaceOrView guard;
    return path_fwd_op().redispatch(ks & c10::after_autograd_keyset, x0, x1, guides, t, orders);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const std::optional<Tensor> guides = maybe(saved[2]);
    const std::vector<int64_t> orders = ctx->saved_data["orders"].toIntVector();
    std::vector<Tensor> used;
    std::vector<int64_t> used_orders;
    for (size_t k = 0; k < grads.size(); ++k)
      if (grads[k].defined()) {
        used.push_back(grads[k]);
        used_orders.push_back(orders[k]);
      }
    variable_list out(6);  // one per forward argument: ks, x0, x1, guides, t, orders
    if (used.empty()) return out;
    // gradient edges exist for the tensor arguments only: x0, x1, guides (when given), t
    const bool need_x0 = ctx->needs_input_grad(0), need_x1 = ctx->needs_input_grad(1);
    const bool need_guides = guides.has_value() && ctx->needs_input_grad(2);
    const bool need_t = ctx->needs_input_grad(guides.has_value() ? 3 : 2);
    auto [gx0, gx1, gguides, gt] = path_bwd_op().call(used, saved[0], saved[1], guides, saved[3], used_orders,
                                                      need_x0 || need_x1 || need_guides, need_t);
    if (need_x0) out[1] = gx0;
    if (need_x1) out[2] = gx1;
    if (need_guides) out[3] = guides_grad(gguides, *guides);
    if (need_t) out[4] = gt;
    return out;
  }
};

struct LossFunction : public torch::autograd::Function<LossFunction> {
  static variable_list forward(AutogradContext* ctx, c10::DispatchKeySet ks, const Tensor& pred, const Tensor& x0,
                               const Tensor& x1, const std::optional<Tensor>& guides, const Tensor& t,
                               const std::optional<Tensor>& weight, c10::string_view target, c10::string_view loss,
                               double huber_c, c10::string_view reduction, bool residual, bool t_grad) {
    Tensor value, out, weight_grad, scale, dt;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      std::tie(value, out, weight_grad, scale, dt) =
          fused_loss_op().redispatch(ks & c10::after_autograd_keyset, pred, x0, x1, guides, t, weight, target, loss,
                                     huber_c, reduction, residual, t_grad);
    }
    ctx->mark_non_differentiable({out, weight_grad, scale, dt});
    ctx->set_materialize_grads(false);
    // what the backward reads: the control points and the scale only with residual (and t for its
    // dtype with t_grad); the rest saved as undefined tensors, which cost nothing
    const Tensor none;
    ctx->save_for_backward({residual ? x0 : none, residual ? x1 : none, residual ? guides.value_or(none) : none,
                            residual || t_grad ? t : none, weight.value_or(none), out, weight_grad,
                            residual ? scale : none, t_grad ? dt : none});
    ctx->saved_data["has_guides"] = guides.has_value();
    ctx->saved_data["velocity"] = target == "velocity";
    ctx->saved_data["rowwise"] = reduction == "none";
    ctx->saved_data["residual"] = residual;
    return {value, out, weight_grad, scale, dt};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(13);  // one per forward argument: ks, then the op's 12
    const Tensor& grad = grads[0];
    if (!grad.defined()) return out;
    const variable_list s = ctx->get_saved_variables();
    const Tensor &x0 = s[0], &x1 = s[1], &t = s[3], &weight = s[4], &res = s[5], &weight_grad = s[6], &scale = s[7],
                 &dt = s[8];
    const std::optional<Tensor> guides = maybe(s[2]);
    const bool velocity = ctx->saved_data["velocity"].toBool(), rowwise = ctx->saved_data["rowwise"].toBool();
    const bool has_guides = ctx->saved_data["has_guides"].toBool();
    // gradient edges exist for the tensor arguments only: pred, x0, x1, guides?, t, weight?
    const size_t t_edge = has_guides ? 4 : 3;
    const bool need_pred = ctx->needs_input_grad(0), need_x0 = ctx->needs_input_grad(1);
    const bool need_x1 = ctx->needs_input_grad(2), need_guides = has_guides && ctx->needs_input_grad(3);
    const bool need_t = ctx->needs_input_grad(t_edge);
    const bool need_weight = weight.defined() && ctx->needs_input_grad(t_edge + 1);
    const bool need_points = need_x0 || need_x1 || need_guides;
    const Tensor& upstream = grad;  // [] (mean, sum) or [B] (none): each sample's factor, by broadcasting
    if (need_t) {
      TORCH_CHECK(dt.defined(), "bezier_kernels::fused_loss: a gradient for t needs t_grad=True");
      out[5] = (upstream * dt).to(t.scalar_type());
    }
    if (need_weight) out[6] = (upstream * weight_grad).to(weight.scalar_type());
    if (!ctx->saved_data["residual"].toBool()) {
      TORCH_CHECK(!need_points, "bezier_kernels::fused_loss: gradients for x0, x1 or guides need residual=True");
      if (need_pred) out[1] = all_ones(grad) ? res : res * (rowwise ? grad.unsqueeze(1) : grad);
      return out;
    }
    const Tensor sample = upstream.to(scale.scalar_type()) * scale;  // dL/dr_bd = sample_b r_bd
    if (need_pred) {
      const Tensor f = velocity ? sample : sample * (1 - t.to(scale.scalar_type()));
      out[1] = (res * f.unsqueeze(1)).to(res.scalar_type());
    }
    if (need_points) {
      // dr/dP_i = -w_1[i] (velocity) or w_0[i] - [i == n] (endpoint): path_bwd of order 1 or 0
      const Tensor sr = (res * sample.unsqueeze(1)).to(res.scalar_type());
      const std::vector<Tensor> g{velocity ? -sr : sr};
      const std::vector<int64_t> order{velocity ? 1 : 0};
      auto [gx0, gx1, gguides, gt] = path_bwd_op().call(g, x0, x1, guides, t, order, true, false);
      if (need_x0) out[2] = gx0;
      if (need_x1) out[3] = velocity ? gx1 : gx1 - sr;
      if (need_guides) out[4] = guides_grad(gguides, *guides);
    }
    return out;
  }
};

std::vector<Tensor> path_fwd_autograd(c10::DispatchKeySet ks, const Tensor& x0, const Tensor& x1,
                                      const std::optional<Tensor>& guides, const Tensor& t, at::IntArrayRef orders) {
  return PathFunction::apply(ks, x0, x1, guides, t, orders);
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> fused_loss_autograd(
    c10::DispatchKeySet ks, const Tensor& pred, const Tensor& x0, const Tensor& x1,
    const std::optional<Tensor>& guides, const Tensor& t, const std::optional<Tensor>& weight,
    c10::string_view target, c10::string_view loss, double huber_c, c10::string_view reduction, bool residual,
    bool t_grad) {
  const variable_list o =
      LossFunction::apply(ks, pred, x0, x1, guides, t, weight, target, loss, huber_c, reduction, residual, t_grad);
  return {o[0], o[1], o[2], o[3], o[4]};
}

}  // namespace
}  // namespace bezier

TORCH_LIBRARY_IMPL(bezier_kernels, Autograd, m) {
  m.impl("path_fwd", TORCH_FN(bezier::path_fwd_autograd));
  m.impl("fused_loss", TORCH_FN(bezier::fused_loss_autograd));
}
