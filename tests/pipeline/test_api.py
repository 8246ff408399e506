"""The library API: make_guides with any callable teacher, Paths on disk, distill, sample, reverse_time.

The references are closed forms: a teacher whose velocity depends on t alone moves every x0 along a
known quadratic Bezier curve (Heun integrates it exactly), and a time-reversed straight flow to a point.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from bezier_distill import Paths, Student, distill, load_student, make_guides, reverse_time, sample
from bezier_distill.config import ConfigError
from bezier_distill.unet import UNet

C = torch.tensor([1.0, -0.5])   # guide offset: the path x0 -> x0 + C -> x0 + D
D = torch.tensor([2.0, 1.0])    # endpoint offset


def quadratic_teacher(c: torch.Tensor, d: torch.Tensor):
    """v(x, t) = B'(t) of B(t) = x0 + 2 t (1 - t) c + t^2 d: the same for every x0, so the ODE from x0 is B."""
    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        shape = (-1,) + (1,) * (x.dim() - 1)
        return (2 * (1 - 2 * t).reshape(shape) * c + 2 * t.reshape(shape) * d).to(x.dtype).expand_as(x)
    return velocity


def test_fit_recovers_the_quadratic_path_of_a_callable_teacher_on_images():
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(37, 1, 2, 2, generator=gen)
    c, d = C.repeat(2).reshape(1, 2, 2), D.repeat(2).reshape(1, 2, 2)
    paths = make_guides(quadratic_teacher(c, d), x0, degree=2, solver="heun", steps=10, batch_size=8, progress=False)
    assert paths.guides.shape == (37, 1, 1, 2, 2) and paths.degree == 2 and paths.shape == (1, 2, 2)
    torch.testing.assert_close(paths.x1, x0 + d, atol=1e-5, rtol=0)
    torch.testing.assert_close(paths.guides[:, 0], x0 + c, atol=1e-5, rtol=0)
    # degree 3 through the same curve: its degree elevation (P0, (P0 + 2 P1) / 3, (2 P1 + P2) / 3, P2)
    cubic = make_guides(quadratic_teacher(c, d), x0, degree=3, solver="heun", steps=10, progress=False)
    p1, p2 = x0 + c, x0 + d
    torch.testing.assert_close(cubic.guides[:, 0], (x0 + 2 * p1) / 3, atol=1e-5, rtol=0)
    torch.testing.assert_close(cubic.guides[:, 1], (2 * p1 + p2) / 3, atol=1e-5, rtol=0)
    line = make_guides(quadratic_teacher(c, d), x0, degree=1, solver="heun", steps=10, progress=False)
    assert line.guides is None and line.degree == 1


def test_multi_teacher_guides_are_each_teachers_state_at_its_time():
    x0 = torch.randn(20, 2, generator=torch.Generator().manual_seed(1))
    first, second = quadratic_teacher(C, D), quadratic_teacher(-C, D)
    paths = make_guides([first, second], x0, method="multi_teacher", guide_times=[0.3, 0.5], solver="heun",
                        steps=10, progress=False)
    exact = lambda c, s: x0 + 2 * s * (1 - s) * c + s * s * D  # noqa: E731
    torch.testing.assert_close(paths.guides[:, 0], exact(C, 0.3), atol=1e-5, rtol=0)
    torch.testing.assert_close(paths.guides[:, 1], exact(-C, 0.5), atol=1e-5, rtol=0)
    torch.testing.assert_close(paths.x1, x0 + D, atol=1e-5, rtol=0)  # the endpoint teacher: the last one


def test_the_teacher_runs_on_its_own_device_without_grad():
    seen = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(2, dtype=torch.float64))

        def forward(self, x, t):
            seen.append((x.dtype, torch.is_grad_enabled(), x.shape[0]))
            return x * 0 + self.weight.float()

    make_guides(Probe().double(), torch.randn(10, 2), degree=1, steps=2, batch_size=4, progress=False)
    assert {s[1] for s in seen} == {False} and sorted({s[2] for s in seen}) == [2, 4]


@pytest.mark.parametrize("scale", [1.0, 1000.0])
def test_reverse_time_adapts_a_teacher_whose_time_runs_from_the_target(scale):
    """u = dx/dsigma of the line x(sigma) = (1 - sigma) m + sigma z (sigma = 1 at the source z, 0 at the point m);
    in our time the path is straight at constant speed, so Euler is exact and x1 = m."""
    m = torch.tensor([3.0, -1.0])

    def noise_level_teacher(x, s):
        sigma = (s / scale)[:, None]
        return (x - m) / sigma

    z = torch.randn(16, 2, generator=torch.Generator().manual_seed(2))
    paths = make_guides(reverse_time(noise_level_teacher, scale), z, degree=1, steps=7, progress=False)
    torch.testing.assert_close(paths.x1, m.expand(16, 2), atol=1e-5, rtol=0)


def test_paths_save_and_load_the_dataset_directory(tmp_path):
    x0 = torch.randn(11, 1, 3, 3)
    paths = make_guides(quadratic_teacher(torch.ones(1, 3, 3), torch.zeros(1, 3, 3)), x0, steps=4, progress=False,
                        out=tmp_path / "paths")
    back = Paths.load(tmp_path / "paths")
    for name in ("x0", "x1", "guides"):
        torch.testing.assert_close(getattr(back, name), getattr(paths, name), atol=0, rtol=0)
    assert back.info["shape"] == [1, 3, 3] and back.info["degree"] == 2 and back.info["kind"] == "guides"
    small = Paths(x0, x0 + 1).save(tmp_path / "chunked", chunk_size=4)
    assert Paths.load(small).guides is None and len(Paths.load(small)) == 11


def _vector_paths(n: int = 512) -> Paths:
    x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(3))
    return make_guides(quadratic_teacher(C, D), x0, solver="heun", steps=10, progress=False)


TINY = {"kind": "mlp", "width": 32, "depth": 1, "time_features": 16}
FAST = dict(batch_size=128, lr=3e-3, warmup_steps=5, ema_decay=0.9, log_every=10, progress=False)


def test_a_one_step_endpoint_student_learns_the_paths_end():
    paths = _vector_paths()
    student = distill(paths, model=TINY, steps=150, **FAST)
    assert isinstance(student, Student) and student.target == "endpoint" and student.degree == 2
    x0 = torch.randn(200, 2, generator=torch.Generator().manual_seed(4))
    error = (sample(student, x0, steps=1) - (x0 + D)).norm(dim=1).mean().item()
    assert error < 0.15, error  # an untrained student (f = 0) is off by |D| = 2.24


def test_distill_out_resumes_like_an_uninterrupted_run(tmp_path):
    paths = _vector_paths(256)
    opts = {**FAST, "checkpoint_every": 10}
    distill(paths, model=TINY, steps=20, out=tmp_path / "a", **opts)
    resumed = distill(paths, model=TINY, steps=40, out=tmp_path / "a", **opts)
    straight = distill(paths, model=TINY, steps=40, out=tmp_path / "b", **opts)
    assert resumed.step == 40
    for (name, a), (_, b) in zip(resumed.state_dict().items(), straight.state_dict().items()):
        assert torch.equal(a, b), name
    loaded = load_student(tmp_path / "a")  # on the CPU; the run's student on CUDA where there is one
    x = torch.randn(5, 2)
    torch.testing.assert_close(loaded(x, torch.zeros(5)), resumed.cpu()(x, torch.zeros(5)), atol=0, rtol=0)
    assert (tmp_path / "a" / "config.yaml").is_file()


def test_distill_takes_any_module_and_defaults_to_the_unet_for_images(tmp_path):
    class Mine(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(3, 2)

        def forward(self, x, t):
            return self.net(torch.cat([x, t[:, None]], 1))

    student = distill(_vector_paths(64), model=Mine(), steps=3, **FAST, out=tmp_path / "mine")
    assert isinstance(student.network, Mine)
    with pytest.raises(ConfigError, match="pass a fresh one"):
        load_student(tmp_path / "mine")
    assert isinstance(load_student(tmp_path / "mine", Mine()).network, Mine)
    images = Paths(torch.randn(8, 1, 6, 6), torch.randn(8, 1, 6, 6), torch.randn(8, 1, 1, 6, 6))
    image_student = distill(images, model={"width": 8, "levels": 1}, steps=2, **{**FAST, "batch_size": 4})
    assert isinstance(image_student.network, UNet)
    assert sample(image_student, torch.randn(3, 1, 6, 6)).shape == (3, 1, 6, 6)


@pytest.mark.parametrize("call, match", [
    (lambda: make_guides(quadratic_teacher(C, D), torch.ones(4, 2, dtype=torch.int64)),
     r"'make_guides\(x0=...\)': must be floating point"),
    (lambda: make_guides(quadratic_teacher(C, D), torch.ones(4)), r"'make_guides\(x0=...\)': must be a tensor"),
    (lambda: make_guides(quadratic_teacher(C, D), torch.ones(4, 2), method="best"), r"make_guides\(method=...\)"),
    (lambda: make_guides(quadratic_teacher(C, D), torch.ones(4, 2), degree=0), r"make_guides\(degree=...\)"),
    (lambda: make_guides([quadratic_teacher(C, D)], torch.ones(4, 2), method="multi_teacher", guide_times=[0.5, 0.6]),
     r"make_guides\(guide_times=...\)"),
    (lambda: make_guides("teacher", torch.ones(4, 2)), r"make_guides\(teacher=...\)"),
    (lambda: distill(_vector_paths(8), steps=2, learning_rate=1.0), r"'distill\(learning_rate=...\)': unknown option"),
    (lambda: distill(_vector_paths(8), steps=2, lr=-1.0), r"'distill.train.lr': must be > 0"),
    (lambda: distill(_vector_paths(8), steps=2, model=nn.Linear(2, 3)), r"'distill\(model=...\)'"),
    (lambda: distill(_vector_paths(8), steps=2, model="nocolon"),
     r"'distill\(model=...\).factory': must be 'package.module:function'"),
    (lambda: distill("/nonexistent/paths", steps=2), r"'distill\(paths=...\)': '/nonexistent/paths' is not a dataset"),
    (lambda: sample(quadratic_teacher(C, D), torch.ones(4, 2), steps=0), r"sample\(steps=...\)"),
])
def test_bad_arguments_are_one_line_errors_naming_them(call, match):
    with pytest.raises(ConfigError, match=match) as error:
        call()
    assert "\n" not in str(error.value)
