"""The library examples run on tiny budgets: a flow_matching teacher distilled through the API, and
Fashion-MNIST with the UNet (skipped without the data, saying how to install it)."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from bezier_distill import datasets

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def examples(monkeypatch):
    """examples/ importable (the scripts import their shared modules by name)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return importlib.import_module


def test_a_flow_matching_teacher_distilled_into_a_one_step_student(examples, capsys):
    pytest.importorskip("flow_matching.path", reason="flow-matching not installed: pip install flow-matching==1.0.10")
    result = examples("distill_flow_matching_teacher").main(teacher_steps=200, student_steps=200, pairs=1024,
                                                            guide_steps=10, student_width=48, progress=False)
    assert "one-step Bezier student" in capsys.readouterr().out
    # 200 steps each: teacher ~0.02, student ~0.03 of the noise's ~0.8
    assert result["teacher"] < 0.1 * result["noise"] and result["student_1_step"] < 0.15 * result["noise"], result


@pytest.mark.skipif(datasets.fashion_mnist_problem() is not None,
                    reason=f"Fashion-MNIST not installed: {datasets.FASHION_INSTALL}")
def test_fashion_mnist_with_the_unet(examples, tmp_path):
    result = examples("distill_fashion_unet").main("fashion:1@7", teacher_steps=30, student_steps=30, pairs=128,
                                                   guide_steps=4, width=8, levels=1, batch_size=16,
                                                   out=str(tmp_path), progress=False)
    assert (tmp_path / "samples.png").stat().st_size > 0 and (tmp_path / "student" / "checkpoint.json").is_file()
    assert result["student_1_step"] < result["noise"] and result["teacher"] < result["noise"], result
