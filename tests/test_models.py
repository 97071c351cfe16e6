"""The three networks: shapes, sizes, layers, receptive fields, and the summary's arithmetic."""
import importlib

import pytest
import torch
import torch.nn as nn

import common
from conftest import STEPS


@pytest.fixture(params=STEPS)
def step(request):
    return importlib.import_module(request.param)


def test_output_is_ten_scores_per_image(step):
    model = step.Net().eval()
    assert model(torch.randn(5, 1, 28, 28)).shape == (5, 10)


def test_receptive_field_covers_the_digit(step):
    rows = common.summarize(step.Net())
    assert rows[-1]["rf"] >= 28
    assert rows[-1]["shape"] == (10,)


@pytest.mark.parametrize("name", ["step2_bn_gap", "step3_aug_sched"])
def test_small_steps_have_no_linear_layer_and_under_8k_params(name):
    model = importlib.import_module(name).Net()
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    assert any(isinstance(m, nn.AdaptiveAvgPool2d) for m in model.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert common.count_params(model) < 8000


def test_skeleton_has_no_batchnorm():
    import step1_skeleton
    assert not any(isinstance(m, nn.BatchNorm2d) for m in step1_skeleton.Net().modules())


def test_importing_a_step_trains_nothing(capsys):
    for name in STEPS:
        importlib.reload(importlib.import_module(name))
    assert capsys.readouterr().out == ""


def test_summary_receptive_field_and_jump_match_hand_computation():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),            # 28x28, rf 3, jump 1
        nn.ReLU(),                                # unchanged
        nn.Conv2d(4, 4, 3, stride=2, padding=1),  # 14x14, rf 3 + 2*1 = 5, jump 2
        nn.MaxPool2d(2),                          # 7x7,  rf 5 + 1*2 = 7, jump 4
        nn.Conv2d(4, 6, 3, dilation=2),           # 3x3,  rf 7 + 2*2*4 = 23, jump 4
        nn.Conv2d(6, 6, 1),                       # 3x3,  1x1 changes nothing
        nn.AdaptiveAvgPool2d(1),                  # 1x1,  kernel 3: rf 23 + 2*4 = 31, jump 12
    )
    rows = common.summarize(model)
    assert [(r["rf"], r["jump"]) for r in rows] == [
        (3, 1), (3, 1), (5, 2), (7, 4), (23, 4), (23, 4), (31, 12)]
    assert [r["shape"] for r in rows] == [
        (4, 28, 28), (4, 28, 28), (4, 14, 14), (4, 7, 7), (6, 3, 3), (6, 3, 3), (6, 1, 1)]
    assert [r["params"] for r in rows] == [40, 0, 148, 0, 222, 42, 0]
    assert rows[0]["macs"] == 28 * 28 * 4 * 9
    assert "total: 452 parameters" in common.format_summary(rows)
