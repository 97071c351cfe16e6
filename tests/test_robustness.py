"""tools/robustness.py: perturbations keep what they must, and the command writes its table."""
import pytest
import torch

import common
import robustness
from conftest import STEPS, call, read_json


def digits(mnist, n=32):
    return mnist[2][:n]


@pytest.mark.parametrize("kind", list(robustness.PERTURBATIONS))
def test_perturbations_keep_shape_dtype_and_background_and_move_the_digits(mnist, kind):
    x = digits(mnist)
    strong = robustness.PERTURBATIONS[kind][2]
    moved = robustness.perturb(x, torch.Generator().manual_seed(0), **strong)
    assert moved.shape == x.shape and moved.dtype == x.dtype and moved.device == x.device
    assert (moved - x).abs().mean() > 0.01
    blank = torch.full((4, 1, 28, 28), common.BACKGROUND)
    assert torch.allclose(robustness.perturb(blank, torch.Generator().manual_seed(0), **strong), blank, atol=1e-5)
    if kind != "all at once":  # alone, no move takes a digit's ink into the empty corners
        corners = moved[:, 0, [0, 0, -1, -1], [0, -1, 0, -1]]
        assert torch.allclose(corners, torch.full_like(corners, common.BACKGROUND), atol=1e-5)


def test_strength_zero_returns_the_input(mnist):
    x = digits(mnist)
    assert torch.equal(robustness.perturb(x, torch.Generator().manual_seed(0)), x)
    assert torch.equal(robustness.stroke_width(x, torch.zeros(len(x))), x)


def test_a_perturbation_is_deterministic_for_its_seed(mnist):
    x = digits(mnist)
    strong = robustness.PERTURBATIONS["all at once"][2]
    first, again, other = (robustness.perturb(x, torch.Generator().manual_seed(seed), **strong)
                           for seed in (1, 1, 2))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_thicker_strokes_have_more_ink_and_thinner_less(mnist):
    x = digits(mnist)
    ink = lambda images: (images > 0).float().sum()  # noqa: E731
    ones = torch.ones(len(x))
    assert ink(robustness.stroke_width(x, ones)) > 1.3 * ink(x) > 1.3 * ink(robustness.stroke_width(x, -ones))


def test_command_writes_table_and_figure_from_saved_weights(smoke_runs, data_dir, mnist):
    out, _ = smoke_runs
    code, stdout, stderr = call(robustness.main, "--out", out, "--data-dir", data_dir, "--device", "cpu",
                                "--limit", "1000")
    assert code == 0, stderr
    assert "missing" not in stdout  # the smoke runs saved every step's weights
    results = read_json(out / "robustness.json")
    assert results["seed"] == robustness.SEED and results["images"] == 1000
    for step in STEPS:
        accuracy = results["accuracy"][step]
        assert len(accuracy) == 1 + 2 * len(robustness.PERTURBATIONS)
        # Channels-last evaluation gives the plain layout's accuracy.
        model = robustness.load_checkpoint(out / f"{step}.pt", step, __import__(step).Net())
        assert accuracy["plain"] == common.evaluate(model, mnist[2][:1000], mnist[3][:1000])[1]
        assert accuracy["all at once, strong"] < accuracy["plain"]
    table = (out / "robustness.md").read_text()
    assert "| test digits | step1_skeleton | step2_bn_gap | step3_aug_sched |" in table
    assert f"| rotated up to 30° | {results['accuracy']['step1_skeleton']['rotated, strong']:.2f} |" in table
    assert (out / "robustness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_command_trains_a_step_whose_weights_are_missing(tmp_path, data_dir):
    code, stdout, stderr = call(robustness.main, "--out", tmp_path, "--data-dir", data_dir, "--device", "cpu",
                                "--steps", "step2_bn_gap", "--epochs", "1", "--subset", "500", "--limit", "500")
    assert code == 0, stderr
    assert "step2_bn_gap.pt is missing: training step2_bn_gap first" in stdout
    assert read_json(tmp_path / "step2_bn_gap.json")["settings"]["subset"] == 500
    assert "| as they are |" in (tmp_path / "robustness.md").read_text()
