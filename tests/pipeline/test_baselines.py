"""The baselines (2-RF++, CAF, MeanFlow) against closed forms: Gaussian to Gaussian, whose flow maps are linear.

Source N(0, I), target N(m, sigma^2 I). The marginal flow of independent pairs maps x0 to T(x0) = m + sigma x0
through z_tau = tau m + sigma_tau x0 with sigma_tau = sqrt((1 - tau)^2 + tau^2 sigma^2) (curved in time), and the
coupling (x0, T(x0)) of that flow is joined by straight lines, so every method can be exact in one step.
"""
from __future__ import annotations

import math

import pytest
import torch

import bezier_kernels as bk
from bezier_distill.baselines import caf, meanflow, networks
from bezier_distill.checkpoint import model_weights
from bezier_distill.config import ConfigError, ModelConfig
from bezier_distill.config.baselines import CAFConfig, MeanFlowConfig, RFPPConfig
from bezier_distill.data import Distribution, IndependentPairs, StoredPairs, get_distribution
from bezier_distill.evaluation.metrics import energy_distance
from bezier_distill.models import UNet
from bezier_distill.train import train

from pipeline_helpers import tiny_train

MEAN, SIGMA = torch.tensor([1.5, -1.0]), 0.5
MODEL = ModelConfig(width=64, depth=2, time_features=16)


def gaussian_map(x0: torch.Tensor) -> torch.Tensor:
    return MEAN.to(x0.dtype) + SIGMA * x0


def gaussian_pairs() -> IndependentPairs:
    target = Distribution("shifted", 2, lambda n, gen: gaussian_map(torch.randn(n, 2, generator=gen)))
    return IndependentPairs(get_distribution("normal:2"), target)


def linear_coupling(n: int = 2048, seed: int = 0) -> StoredPairs:
    x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
    return StoredPairs(x0, gaussian_map(x0), None, seed)


def map_error(sample, n: int = 512) -> tuple[float, float, float]:
    """(mean |sample(x0) - T(x0)|^2, energy distance of the sample, of the source) on fresh x0 [n, 2]."""
    x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(99))
    x1 = sample(x0)
    reference = gaussian_map(torch.randn(n, 2, generator=torch.Generator().manual_seed(98)))
    return (float((x1 - gaussian_map(x0)).square().sum(1).mean()), energy_distance(x1, reference),
            energy_distance(x0, reference))


# ---------------------------------------------------------------- MeanFlow

def gaussian_average_velocity(z, s, t):
    """The exact average velocity u(z, s, t) of the Gaussian marginal flow: (z_t - z_s) / (t - s) along
    z_tau = tau m + sigma_tau x0 with x0 = (z - s m) / sigma_s (at t = s, the instantaneous velocity)."""
    def scale(tau):
        return torch.sqrt((1 - tau) ** 2 + tau ** 2 * SIGMA ** 2)

    mean = MEAN.double()
    x0 = (z - s[:, None] * mean) / scale(s)[:, None]
    gap = t - s
    safe = torch.where(gap.abs() > 0, gap, torch.ones_like(gap))
    slope = torch.where(gap.abs() > 0, (scale(t) - scale(s)) / safe, (-(1 - s) + s * SIGMA ** 2) / scale(s))
    return mean + slope[:, None] * x0


def test_the_meanflow_identity_holds_for_the_exact_average_velocity_of_a_curved_flow():
    """With the marginal velocity v(z, s) = u(z, s, s), the target v + (t - s) du/ds equals u itself (the JVP in
    this project's time direction), while the paper's sign (its time runs the other way) does not."""
    generator = torch.Generator().manual_seed(0)
    s = torch.rand(64, generator=generator, dtype=torch.float64) * 0.5
    t = s + torch.rand(64, generator=generator, dtype=torch.float64) * (1 - s)
    t[:16] = s[:16]  # flow-matching samples: the target is v itself
    z = torch.randn(64, 2, generator=generator, dtype=torch.float64)
    v = gaussian_average_velocity(z, s, s)
    u, target = meanflow.meanflow_target(gaussian_average_velocity, z, s, t, v)
    assert torch.allclose(target, u, atol=1e-10)
    _, du_ds = torch.func.jvp(gaussian_average_velocity, (z, s, t), (v, torch.ones_like(s), torch.zeros_like(t)))
    assert (du_ds.abs() > 1e-3).any()  # the flow is curved: the identity is not the trivial u = v
    assert torch.equal(target[:16], v[:16])
    assert not torch.allclose(v - (t - s)[:, None] * du_ds, u, atol=1e-3)


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_the_meanflow_sampler_is_exact_for_the_exact_average_velocity(steps):
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    x1, states = meanflow.sample_meanflow(gaussian_average_velocity, x0, steps, record=True)
    assert torch.allclose(x1, gaussian_map(x0), atol=1e-12) and states.shape == (64, steps + 1, 2)
    if steps == 2:  # the middle state is the flow's z_(1/2) = m / 2 + sigma_(1/2) x0
        assert torch.allclose(states[:, 1], MEAN.double() / 2 + math.sqrt(0.25 + 0.25 * SIGMA ** 2) * x0)


def test_meanflow_times_have_the_papers_ratio_and_order():
    cfg = MeanFlowConfig(mean_ratio=0.25)
    s, t = meanflow.sample_times(cfg, 20000, torch.Generator().manual_seed(1))
    assert bool((s <= t).all()) and bool(((s >= 0) & (t <= 1)).all())
    assert float((t > s).float().mean()) == pytest.approx(0.25, abs=0.015)
    # the paper's later time 1 - s is the max of two logit-normal(-0.4, 1) draws: its median is below 0.5
    assert float((1 - s).median()) == pytest.approx(0.5, abs=0.12)


def test_meanflow_adaptive_weight_normalises_each_sample():
    u = torch.tensor([[3.0, 4.0], [0.0, 0.0]], requires_grad=True)
    target = torch.zeros(2, 2)
    loss = meanflow.meanflow_loss(u, target, power=1.0, eps=1e-3)
    assert float(loss.detach()) == pytest.approx((25 / 25.001 + 0) / 2)
    loss.backward()  # d/du of sg(w) |u|^2 = 2 u / (|u|^2 + eps)
    assert torch.allclose(u.grad[0], torch.tensor([3.0, 4.0]) * 2 / 25.001 / 2)


def test_meanflow_learns_the_gaussian_map_in_one_step(tmp_path):
    cfg = MeanFlowConfig(train=tiny_train(steps=300, batch_size=128, checkpoint_every=300, log_every=100))
    result = meanflow.train_meanflow(cfg, MODEL, gaussian_pairs(), tmp_path / "mf", run_info={}, progress=False)
    model = meanflow.load_meanflow(tmp_path / "mf")
    error, distance, source = map_error(lambda x0: meanflow.sample_meanflow(model, x0, 1)[0])
    two, _, _ = map_error(lambda x0: meanflow.sample_meanflow(model, x0, 2)[0])
    assert result.step == 300 and error < 0.15 and two < 0.15 and distance < 0.05 * source  # seeds 0-2: 0.08-0.11


# ---------------------------------------------------------------- CAF

def test_the_caf_path_is_the_constant_acceleration_path():
    generator = torch.Generator().manual_seed(2)
    x0, x1, v0 = (torch.randn(32, 3, generator=generator, dtype=torch.float64) for _ in range(3))
    t = torch.rand(32, generator=generator, dtype=torch.float64)
    position, velocity, acceleration = caf.caf_path(x0, x1, t, v0, (0, 1, 2))
    a = 2 * (x1 - x0 - v0)
    assert torch.allclose(position, x0 + t[:, None] * v0 + 0.5 * t[:, None] ** 2 * a)
    assert torch.allclose(velocity, v0 + t[:, None] * a) and torch.allclose(acceleration, a)


class _OracleVelocity(torch.nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x, t):  # v0 = h (T(x0) - x0): asked at t = 0 only
        return self.scale * (gaussian_map(x) - x)


class _OracleAcceleration(torch.nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x, t, v0):  # a = 2 (x1 - x0 - v0) = 2 (1 - h) / h v0 on the coupling
        return 2 * (1 - self.scale) / self.scale * v0


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_the_caf_sampler_is_exact_for_exact_networks(steps):
    model = caf.CAFModel(_OracleVelocity(1.5), _OracleAcceleration(1.5))
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x1, states = caf.sample_caf(model, x0, steps, record=True)
    assert torch.allclose(x1, gaussian_map(x0), atol=1e-12) and states.shape == (64, steps + 1, 2)
    t = torch.full((64,), 0.5, dtype=torch.float64)
    if steps == 2:  # the middle state lies on the path x0 + t v0 + t^2 a / 2
        (middle,) = caf.caf_path(x0, gaussian_map(x0), t, 1.5 * (gaussian_map(x0) - x0), (0,))
        assert torch.allclose(states[:, 1], middle, atol=1e-12)


def test_caf_learns_the_gaussian_map_in_one_step(tmp_path):
    steps = dict(batch_size=256, checkpoint_every=300, log_every=100)
    cfg = CAFConfig(velocity=tiny_train(steps=300, **steps), acceleration=tiny_train(steps=300, **steps))
    result = caf.train_caf(cfg, MODEL, linear_coupling(), tmp_path / "caf", run_info={}, progress=False)
    model = caf.load_caf(tmp_path / "caf")
    error, distance, source = map_error(lambda x0: caf.sample_caf(model, x0, 1)[0])
    assert result.step == 600 and error < 0.05 and distance < 0.05 * source


# ---------------------------------------------------------------- 2-RF++

def test_rfpp_learns_the_gaussian_map_in_one_step_with_its_recipe(tmp_path):
    recipe = RFPPConfig().train
    assert (recipe.target, recipe.loss, recipe.time_sampling) == ("velocity", "pseudo_huber", "u_shaped")
    cfg = tiny_train(steps=400, batch_size=256, checkpoint_every=400, log_every=100, target=recipe.target,
                     loss=recipe.loss, time_sampling=recipe.time_sampling)
    result = train(cfg, MODEL, linear_coupling(), tmp_path / "rfpp", run_info={"stage": "rfpp"}, progress=False)
    model = result.ema.eval()
    with torch.no_grad():
        error, distance, source = map_error(lambda x0: x0 + model(x0, torch.zeros(x0.shape[0])))
    assert error < 0.05 and distance < 0.05 * source
    # the pseudo-Huber loss of the fused op: sqrt(|r|^2 + c^2) - c with c = 0.00054 sqrt(D)
    pred, x0, x1 = torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([[3.0, 4.0]])
    c = 0.00054 * math.sqrt(2)
    assert float(bk.bezier_distill_loss(pred, x0, x1, torch.zeros(1), loss="pseudo_huber")) == pytest.approx(
        math.sqrt(25 + c * c) - c, rel=1e-6)


def test_a_killed_baseline_run_resumes_to_the_same_weights(tmp_path):
    """The shared loop (here under MeanFlow): killed after 17 steps (last checkpoint at 10) and rerun, it ends
    with the weights of an uninterrupted run, bit for bit."""
    small = ModelConfig(width=16, depth=1, time_features=8)
    cfg = MeanFlowConfig(train=tiny_train(steps=30, batch_size=32, checkpoint_every=10, log_every=5))
    whole = meanflow.train_meanflow(cfg, small, gaussian_pairs(), tmp_path / "whole", run_info={}, progress=False)
    meanflow.train_meanflow(cfg, small, gaussian_pairs(), tmp_path / "cut", run_info={}, progress=False, stop_after=17)
    resumed = meanflow.train_meanflow(cfg, small, gaussian_pairs(), tmp_path / "cut", run_info={}, progress=False)
    assert resumed.step == 30
    for name, weight in whole.ema.state_dict().items():
        assert torch.equal(weight, resumed.ema.state_dict()[name]), name
    assert [e["loss"] for e in resumed.log] == [e["loss"] for e in whole.log]


def test_caf_and_meanflow_networks_take_images_as_their_vectors():
    """Images [B, 1, 2, 3]: the same outputs (reshaped) as the vectors [B, 6]; MeanFlow's target too."""
    torch.manual_seed(0)
    x, v0, t, s = torch.randn(5, 1, 2, 3), torch.randn(5, 1, 2, 3), torch.rand(5), torch.rand(5) * 0.5
    acceleration = networks.AccelerationMLP(6, 16, 1, 8)
    torch.nn.init.normal_(acceleration.output[-1].weight)  # the output layer starts at zero
    image = acceleration(x, t, v0)
    assert image.shape == x.shape and float(image.detach().abs().sum()) > 0
    torch.testing.assert_close(image.flatten(1), acceleration(x.flatten(1), t, v0.flatten(1)))
    average = networks.MeanFlowMLP(6, 16, 1, 8)
    torch.nn.init.normal_(average.output[-1].weight)
    u, target = meanflow.meanflow_target(average, x, s, s + 0.3, v0)
    flat_u, flat_target = meanflow.meanflow_target(average, x.flatten(1), s, s + 0.3, v0.flatten(1))
    assert u.shape == target.shape == x.shape
    torch.testing.assert_close(u.flatten(1), flat_u)
    torch.testing.assert_close(target.flatten(1), flat_target)


# ---------------------------------------------------------------- the networks' families: MLP and UNet

IMAGE = (1, 4, 4)
SMALL_UNET = ModelConfig(width=8, levels=1, time_features=8)  # kind auto: the UNet for images


def image_map(x0: torch.Tensor) -> torch.Tensor:
    """The Gaussian map pixel by pixel: N(0, I) -> N(1.5, 0.25 I) on images [B, 1, 4, 4]."""
    return 1.5 + SIGMA * x0


def _nonzero_output(network: torch.nn.Module) -> torch.nn.Module:
    last = network.out if hasattr(network, "out") else network.output[-1]
    torch.nn.init.normal_(last.weight, std=0.3)  # the output layer starts at zero
    return network


def test_baseline_networks_are_of_the_students_family_and_refuse_factories():
    assert type(networks.build_network("velocity", SMALL_UNET, IMAGE)) is UNet
    assert type(networks.build_network("acceleration", SMALL_UNET, IMAGE)) is networks.AccelerationUNet
    assert type(networks.build_network("meanflow", SMALL_UNET, IMAGE)) is networks.MeanFlowUNet
    assert type(networks.build_network("acceleration", SMALL_UNET, (6,))) is networks.AccelerationMLP
    mlp = ModelConfig(kind="mlp", width=16, depth=1, time_features=8)
    assert type(networks.build_network("meanflow", mlp, IMAGE)) is networks.MeanFlowMLP
    with pytest.raises(ConfigError, match=r"'caf\.model\.factory': .*use model\.kind 'mlp' or 'unet'"):
        networks.build_network("acceleration", ModelConfig(factory="tests:net"), IMAGE, "caf.model")
    # the run info a checkpoint holds rebuilds the same network (older runs recorded only "dim": the MLP)
    run = {"shape": list(IMAGE), "model": {"kind": "unet", "width": 8, "depth": 1, "levels": 1, "time_features": 8,
                                           "factory": ""}}
    assert type(networks.rebuild("acceleration", run)) is networks.AccelerationUNet
    old = {"dim": 6, "model": {"kind": "mlp", "width": 16, "depth": 1, "levels": None, "time_features": 8,
                               "factory": ""}}
    assert type(networks.rebuild("meanflow", old)) is networks.MeanFlowMLP


def test_the_unet_baselines_take_their_extra_inputs():
    """AccelerationUNet depends on v0 and MeanFlowUNet on the interval t - s; both keep the image shape."""
    torch.manual_seed(0)
    x, v0 = torch.randn(3, *IMAGE), torch.randn(3, *IMAGE)
    t = torch.rand(3)
    acceleration = _nonzero_output(networks.AccelerationUNet(IMAGE, 8, 1, 1, 8))
    out = acceleration(x, t, v0)
    assert out.shape == x.shape and not torch.allclose(out, acceleration(x, t, v0 + 1.0))
    average = _nonzero_output(networks.MeanFlowUNet(IMAGE, 8, 1, 1, 8))
    s = 0.5 * t
    u = average(x, s, t)
    assert u.shape == x.shape and not torch.allclose(u, average(x, s, s))


def test_the_meanflow_target_of_the_unet_is_its_derivative_along_the_flow():
    """The JVP in meanflow_target against central differences of u along (v, 1, 0) (float64 but for the time
    embedding, which takes times in float32: a step of 1e-3, so the differences are good to ~1e-4)."""
    torch.manual_seed(1)
    net = _nonzero_output(networks.MeanFlowUNet(IMAGE, 8, 1, 1, 8)).double()
    z, v = torch.randn(4, *IMAGE, dtype=torch.float64), torch.randn(4, *IMAGE, dtype=torch.float64)
    s = torch.tensor([0.1, 0.3, 0.5, 0.2], dtype=torch.float64)
    t = s + torch.tensor([0.4, 0.2, 0.0, 0.6], dtype=torch.float64)
    _, target = meanflow.meanflow_target(net, z, s, t, v)
    eps = 1e-3
    with torch.no_grad():
        du_ds = (net(z + eps * v, s + eps, t) - net(z - eps * v, s - eps, t)) / (2 * eps)
    torch.testing.assert_close(target, v + (t - s)[:, None, None, None] * du_ds, rtol=1e-3, atol=1e-5)
    assert not torch.allclose(target, v, rtol=1e-3, atol=1e-5)  # the derivative term is not negligible


def test_caf_from_a_unet_teacher_and_meanflow_learn_an_image_map_in_one_step(tmp_path):
    """Images [1, 4, 4], the UNet family throughout: CAF's velocity model starts from a UNet teacher's weights
    (what the comparison does with model.kind auto on images), and both methods' one-step samples come far
    closer to the map than the source."""
    teacher_pairs = StoredPairs(*(lambda x0: (x0, image_map(x0)))(torch.randn(1024, *IMAGE)), None, 0)
    train(tiny_train(steps=20, batch_size=64, checkpoint_every=20, target="velocity"), SMALL_UNET, teacher_pairs,
          tmp_path / "teacher", run_info={"stage": "teacher"}, progress=False)
    x0 = torch.randn(2048, *IMAGE, generator=torch.Generator().manual_seed(5))
    steps = dict(batch_size=64, checkpoint_every=150, log_every=50)
    cfg = CAFConfig(velocity=tiny_train(steps=150, **steps), acceleration=tiny_train(steps=150, **steps))
    caf.train_caf(cfg, SMALL_UNET, StoredPairs(x0, image_map(x0), None, 0), tmp_path / "caf", run_info={},
                  progress=False, init_weights=model_weights(tmp_path / "teacher")[0])
    model = caf.load_caf(tmp_path / "caf")
    assert type(model.velocity) is UNet and type(model.acceleration) is networks.AccelerationUNet
    target = Distribution("image map", 16, lambda n, gen: image_map(torch.randn(n, *IMAGE, generator=gen)),
                          shape=IMAGE)
    mf_cfg = MeanFlowConfig(train=tiny_train(steps=150, batch_size=64, checkpoint_every=150, log_every=50))
    meanflow.train_meanflow(mf_cfg, SMALL_UNET, IndependentPairs(get_distribution("normal", shape=IMAGE), target),
                            tmp_path / "mf", run_info={}, progress=False)
    average = meanflow.load_meanflow(tmp_path / "mf")
    assert type(average) is networks.MeanFlowUNet
    test = torch.randn(256, *IMAGE, generator=torch.Generator().manual_seed(6))

    def error(x1: torch.Tensor) -> float:
        return float((x1 - image_map(test)).square().flatten(1).sum(1).mean())

    source = error(test)  # 16 (1.5^2 + 0.5^2) = 40
    caf_error, mf_error = error(caf.sample_caf(model, test, 1)[0]), error(meanflow.sample_meanflow(average, test, 1)[0])
    assert caf_error < 0.02 * source and mf_error < 0.15 * source  # measured: 0.20 and 2.8 of 39.8
