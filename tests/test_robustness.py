"""tools/robustness.py: perturbations keep what they must, and the command writes its table."""
import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

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


@pytest.fixture
def strongest(monkeypatch):
    """Every per-image draw at the top of its range: a perturbation at exactly its stated strength."""
    monkeypatch.setattr(torch, "rand", lambda *shape, generator=None: torch.ones(*shape))


def test_rotation_at_full_strength_is_torchvisions_rotation_in_degrees(mnist, strongest):
    x = digits(mnist, 16)
    ours = robustness.perturb(x, None, degrees=30)
    theirs = TF.rotate(x, 30.0, interpolation=InterpolationMode.BILINEAR, fill=[common.BACKGROUND])
    other_way = TF.rotate(x, -30.0, interpolation=InterpolationMode.BILINEAR, fill=[common.BACKGROUND])
    assert (ours - theirs).abs().mean() < 0.05 < (ours - other_way).abs().mean()


def test_shift_at_full_strength_is_a_whole_pixel_roll(mnist, strongest):
    x = digits(mnist, 16)
    ours = robustness.perturb(x, None, shift=2)  # right by 2 and down by 2 pixels
    rolled = torch.roll(x, shifts=(2, 2), dims=(2, 3))
    assert torch.allclose(ours[..., 2:, 2:], rolled[..., 2:, 2:], atol=1e-5)
    assert torch.allclose(ours[..., :2, :], torch.full_like(ours[..., :2, :], common.BACKGROUND), atol=1e-5)


def test_zoom_at_full_strength_is_torchvisions_scale(mnist, strongest):
    x = digits(mnist, 16)
    ours = robustness.perturb(x, None, zoom=(1.0, 1.3))
    theirs = TF.affine(x, angle=0.0, translate=[0, 0], scale=1.3, shear=[0.0],
                       interpolation=InterpolationMode.BILINEAR, fill=[common.BACKGROUND])
    assert (ours - theirs).abs().mean() < 0.05 < (ours - x).abs().mean()


@pytest.mark.parametrize("stroke, sign", [((0.0, 1.0), 1), ((-1.0, 0.0), -1)])
def test_stroke_change_of_one_pixel_is_a_3x3_dilation_or_erosion(mnist, strongest, stroke, sign):
    x = digits(mnist, 16)
    reference = sign * torch.nn.functional.max_pool2d(sign * x, 3, stride=1, padding=1)
    with_strongest_draw = robustness.perturb(x, None, stroke=stroke if sign > 0 else (-1.0, -1.0))
    assert torch.allclose(with_strongest_draw, reference, atol=1e-6)
