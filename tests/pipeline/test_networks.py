"""Networks: the conv UNet, model.factory for a user's own network, and an outside teacher on the CLI
(--teacher-model / --teacher-weights), which must make what the Python API makes from the same network."""
from __future__ import annotations

import re
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from bezier_distill import Paths, load_student, make_guides, stages
from bezier_distill.checkpoint import load_model
from bezier_distill.cli import main
from bezier_distill.config import ConfigError, DataConfig, ModelConfig, TeacherConfig
from bezier_distill.models import build_model
from bezier_distill.unet import UNet

from pipeline_helpers import tiny_train

NETS = '''
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, 16), nn.Tanh(), nn.Linear(16, dim))

    def forward(self, x, t):
        return self.net(torch.cat([x, t[:, None].to(x.dtype)], 1))


def good(shape):
    return Tiny(shape[0])


def broken(shape):
    raise RuntimeError("no GPU here")


def not_a_module(shape):
    return 3


def wrong_shape(shape):
    return Tiny(shape[0] + 1)
'''


@pytest.fixture
def user_nets(tmp_path, monkeypatch):
    (tmp_path / "user_nets_mod.py").write_text(textwrap.dedent(NETS))
    monkeypatch.syspath_prepend(str(tmp_path))
    import user_nets_mod

    return user_nets_mod


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 14, 14), (3, 7, 5), (2, 3, 3)])
def test_the_unet_keeps_the_shape_starts_at_zero_and_depends_on_t(shape):
    torch.manual_seed(0)
    net = UNet(shape, width=8, levels=2, blocks=1, time_features=16)
    x = torch.randn(3, *shape)
    assert torch.equal(net(x, torch.rand(3)), torch.zeros(3, *shape))  # zero output layer
    nn.init.normal_(net.out.weight, std=0.1)
    a, b = net(x, torch.zeros(3)), net(x, torch.ones(3))
    assert a.shape == (3, *shape) and not torch.allclose(a, b)
    a.square().sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    assert sum(isinstance(m, nn.GroupNorm) for m in net.modules()) >= 4


def test_model_config_picks_the_unet_for_images_and_sets_its_size():
    unet = build_model(ModelConfig(width=16, levels=3, depth=2), (1, 14, 14))
    assert isinstance(unet, UNet) and len(unet.downsample) == 3 and len(unet.down[0]) == 2
    assert unet.stem.out_channels == 16
    assert not isinstance(build_model(ModelConfig(), (2,)), UNet)
    mlp_on_images = build_model(ModelConfig(kind="mlp", width=8, depth=1), (1, 4, 4))
    assert mlp_on_images(torch.randn(2, 1, 4, 4), torch.zeros(2)).shape == (2, 1, 4, 4)
    with pytest.raises(ConfigError, match="'model.kind': the UNet needs images"):
        build_model(ModelConfig(kind="unet"), (5,))


def test_a_factory_network_trains_and_is_rebuilt_from_its_checkpoint(tmp_path, user_nets):
    cfg = TeacherConfig(data=DataConfig("normal", "moons"), model=ModelConfig(factory="user_nets_mod:good"),
                        train=tiny_train(steps=20, batch_size=64))
    stages.train_teacher(cfg, tmp_path / "run", progress=False)
    model, state = load_model(tmp_path / "run")
    assert type(model).__name__ == "Tiny" and state["run"]["model"]["factory"] == "user_nets_mod:good"


@pytest.mark.parametrize("factory, match", [
    ("no_such_module_xyz:make", "cannot import 'no_such_module_xyz:make': No module named"),
    ("user_nets_mod:absent", "cannot import 'user_nets_mod:absent'"),
    ("user_nets_mod:broken", r"'user_nets_mod:broken' failed when called with the feature shape \(2,\): RuntimeError"),
    ("user_nets_mod:not_a_module", "returned a int, not an nn.Module"),
    ("user_nets_mod:wrong_shape", r"user_nets_mod:wrong_shape failed on an input \[2, 2\]"),
    ("no_colon", "must be 'package.module:function'"),
])
def test_factory_errors_name_the_factory_before_anything_is_written(tmp_path, user_nets, factory, match):
    cfg = TeacherConfig(data=DataConfig("normal", "moons"), model=ModelConfig(factory=factory),
                        train=tiny_train(steps=2))
    with pytest.raises(ConfigError, match=f"config field 'teacher.model.factory': .*{match}") as error:
        stages.train_teacher(cfg, tmp_path / "run", progress=False)
    assert "\n" not in str(error.value) and not (tmp_path / "run").exists()


def test_an_output_of_the_wrong_shape_is_named(tmp_path, monkeypatch):
    (tmp_path / "shape_nets.py").write_text("from torch import nn\n\nclass Half(nn.Module):\n"
                                            "    def forward(self, x, t):\n        return x[:, :1]\n\n"
                                            "def make(shape):\n    return Half()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"'x.factory': shape_nets:make maps an input \[2, 2\] to \[2, 1\]; the "
                                          "output must have the input's shape"):
        build_model(ModelConfig(factory="shape_nets:make"), (2,), "x")


def _teacher_files(tmp_path, user_nets):
    torch.manual_seed(1)
    net = user_nets.good((2,))
    torch.save(net.state_dict(), tmp_path / "teacher.pt")
    save_file(net.state_dict(), str(tmp_path / "teacher.safetensors"))
    return net


OUTSIDE = ["--teacher-model", "user_nets_mod:good", "--no-progress", "--device", "cpu"]


def test_an_outside_teacher_on_the_cli_makes_what_the_api_makes(tmp_path, user_nets, capsys):
    net = _teacher_files(tmp_path, user_nets)
    out = tmp_path / "guides"
    code = main(["make-guides", "--out", str(out), *OUTSIDE, "--teacher-weights", str(tmp_path / "teacher.pt"),
                 "--set", "guides.teacher_data.target=moons", "--set", "guides.generate.num_samples=40",
                 "--set", "guides.generate.chunk_size=16", "--set", "guides.generate.solver.steps=5"])
    assert code == 0, capsys.readouterr().err
    stored = Paths.load(out)
    assert stored.info["teachers"][0]["external"]["factory"] == "user_nets_mod:good"
    assert stored.info["data"] == {"source": "normal", "target": "moons"}
    ref = make_guides(net, stored.x0, degree=2, steps=5, progress=False)
    torch.testing.assert_close(stored.guides, ref.guides, atol=1e-6, rtol=0)
    torch.testing.assert_close(stored.x1, ref.x1, atol=1e-6, rtol=0)

    code = main(["reflow", "--out", str(tmp_path / "rf"), *OUTSIDE,
                 "--teacher-weights", str(tmp_path / "teacher.safetensors"),
                 "--set", "reflow.teacher_data.target=moons", "--set", "reflow.coupling.num_samples=32",
                 "--set", "reflow.coupling.solver.steps=3", "--set", "reflow.train.steps=4",
                 "--set", "reflow.train.batch_size=16", "--set", "reflow.train.warmup_steps=0"])
    assert code == 0, capsys.readouterr().err
    student = load_student(tmp_path / "rf")
    assert type(student.network).__name__ == "Tiny" and student.step == 4
    coupling = Paths.load(tmp_path / "rf" / "coupling")
    ref = make_guides(net, coupling.x0, degree=1, steps=3, progress=False)
    torch.testing.assert_close(coupling.x1, ref.x1, atol=1e-6, rtol=0)


@pytest.mark.parametrize("extra, match", [
    (["--teacher-weights", "{tmp}/absent.pt"], "'guides.teacher_weights': weights file '.*absent.pt' does not exist"),
    (["--teacher-weights", "{tmp}/teacher.txt"], "'guides.teacher_weights': .*expected a .pt or .safetensors"),
    ([], "'guides.teacher_weights': teacher_model and teacher_weights go together"),
    (["--teacher-weights", "{tmp}/teacher.pt", "--teacher", "runs/x"], "'guides.teacher_model': an outside teacher "
     "replaces the teacher run directories"),
    (["--teacher-weights", "{tmp}/other.pt"],
     "'guides.teacher_weights': '.*other.pt' does not fit 'user_nets_mod:good'"),
    (["--teacher-weights", "{tmp}/teacher.pt", "--set", "guides.teacher_data.source=digits"],
     "'guides.teacher_data.target': 'moons' has 2 dimensions, the source 'digits' has 64"),
])
def test_outside_teacher_mistakes_are_one_line_errors(tmp_path, user_nets, capsys, extra, match):
    _teacher_files(tmp_path, user_nets)
    torch.save({"net.0.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    (tmp_path / "teacher.txt").write_text("x")
    args = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    code = main(["make-guides", "--out", str(tmp_path / "g"), *OUTSIDE, "--set", "guides.teacher_data.target=moons",
                 *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert re.search(match, err), err


def test_images_from_a_file_stay_images_through_every_cli_stage(tmp_path, capsys):
    """normal -> file:images.npy [N, 1, 6, 6]: train-teacher, make-guides, distill and sample keep [1, 6, 6] (UNet,
    the store's chunks, the checkpoints, the figure)."""
    np.save(tmp_path / "images.npy", torch.randn(50, 1, 6, 6, generator=torch.Generator().manual_seed(0)).numpy())
    data = ["--set", f"teacher.data.target=file:{tmp_path / 'images.npy'}"]
    small = {"teacher": ["--set", "teacher.model.width=8", "--set", "teacher.model.levels=1"],
             "distill": ["--set", "distill.model.width=8", "--set", "distill.model.levels=1"]}
    fast = lambda s: ["--set", f"{s}.train.steps=3", "--set", f"{s}.train.batch_size=8",  # noqa: E731
                      "--set", f"{s}.train.warmup_steps=0"]
    common = ["--device", "cpu", "--no-progress"]
    assert main(["train-teacher", "--out", str(tmp_path / "rf1"), *common, *data, *small["teacher"],
                 *fast("teacher")]) == 0
    assert main(["make-guides", "--teacher", str(tmp_path / "rf1"), "--out", str(tmp_path / "g"), *common,
                 "--set", "guides.generate.num_samples=16", "--set", "guides.generate.solver.steps=3"]) == 0
    paths = Paths.load(tmp_path / "g")
    assert paths.guides.shape == (16, 1, 1, 6, 6) and paths.info["tensors"]["x0"] == [1, 6, 6]
    assert main(["distill", "--pairs", str(tmp_path / "g"), "--out", str(tmp_path / "s"), *common, *small["distill"],
                 *fast("distill")]) == 0
    assert isinstance(load_student(tmp_path / "s").network, UNet)
    assert main(["sample", "--model", str(tmp_path / "s"), "--out", str(tmp_path / "x"), *common,
                 "--set", "sample.num_samples=16"]) == 0, capsys.readouterr().err
    assert load_file(str(tmp_path / "x" / "samples.safetensors"))["x1"].shape == (16, 1, 6, 6)
    assert (tmp_path / "x" / "samples.png").stat().st_size > 0
