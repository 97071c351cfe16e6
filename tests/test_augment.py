"""Batched augmentation: range, shape, fill, determinism, identity, and agreement with torchvision."""
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

import common


def digits(mnist, n=64):
    return mnist[0][:n]


def random_angles(n, degrees, generator):
    return common.random_affine(n, dict(degrees=degrees), generator)[0]


def test_angles_stay_in_range_and_use_it():
    angles = random_angles(10_000, 7.0, torch.Generator().manual_seed(0))
    assert angles.shape == (10_000,)
    assert angles.abs().max() <= 7.0
    assert angles.min() < -6.9 and angles.max() > 6.9  # spread over the whole range
    assert abs(angles.mean()) < 0.2


def test_rotation_keeps_shape_dtype_and_device(mnist):
    x = digits(mnist)
    out = common.affine(x, random_angles(len(x), 15.0, torch.Generator().manual_seed(1)))
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert not torch.equal(out, x)


def test_zero_rotation_returns_the_input(mnist):
    x = digits(mnist)
    assert torch.allclose(common.affine(x, torch.zeros(len(x))), x, atol=1e-5)


def test_background_fill_is_the_normalised_zero(mnist):
    x = digits(mnist)
    out = common.affine(x, torch.full((len(x),), 45.0))
    # Corners come from outside the image: they must be background, not 0.
    corners = out[:, 0, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert torch.allclose(corners, torch.full_like(corners, common.BACKGROUND), atol=1e-5)
    blank = torch.full((4, 1, 28, 28), common.BACKGROUND)
    assert torch.allclose(common.affine(blank, torch.tensor([-30.0, -5.0, 5.0, 30.0])), blank, atol=1e-5)


def test_same_generator_seed_same_augmentation(mnist):
    x = digits(mnist)
    first = common.affine(x, random_angles(len(x), 7.0, torch.Generator().manual_seed(3)))
    again = common.affine(x, random_angles(len(x), 7.0, torch.Generator().manual_seed(3)))
    other = common.affine(x, random_angles(len(x), 7.0, torch.Generator().manual_seed(4)))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_each_image_gets_its_own_angle(mnist):
    x = digits(mnist, 2)[:1].repeat(2, 1, 1, 1)
    out = common.affine(x, torch.tensor([-7.0, 7.0]))
    assert not torch.allclose(out[0], out[1])


def test_rotation_matches_torchvision_direction_and_fill(mnist):
    x = digits(mnist, 8)
    for angle in (-20.0, 7.0, 30.0):
        ours = common.affine(x, torch.full((len(x),), angle))
        theirs = TF.rotate(x, angle, interpolation=InterpolationMode.BILINEAR, fill=[common.BACKGROUND])
        # Same direction, centre and fill: the two differ only in sub-pixel sampling details.
        assert (ours - theirs).abs().mean() < 0.05, angle
        mirrored = TF.rotate(x, -angle, interpolation=InterpolationMode.BILINEAR, fill=[common.BACKGROUND])
        assert (ours - theirs).abs().mean() < (ours - mirrored).abs().mean() / 3


def test_affine_draws_stay_in_range():
    angles, zooms, shifts = common.random_affine(10_000, dict(degrees=10, zoom=0.1, shift=2),
                                                 torch.Generator().manual_seed(0))
    assert angles.abs().max() <= 10 and zooms.min() >= 0.9 and zooms.max() <= 1.1
    assert shifts.shape == (10_000, 2) and shifts.abs().max() <= 2
    assert zooms.min() < 0.91 and shifts.max() > 1.9


def test_whole_pixel_shift_moves_the_digit_exactly(mnist):
    x = digits(mnist, 4)
    moved = common.affine(x, torch.zeros(4), shifts=torch.tensor([[2.0, -3.0]] * 4))
    # Right by 2 and up by 3: what was at (row r, col c) is now at (r - 3, c + 2).
    assert torch.allclose(moved[:, :, :-3, 2:], x[:, :, 3:, :-2], atol=1e-5)
    assert torch.allclose(moved[:, :, :, :2], torch.full_like(moved[:, :, :, :2], common.BACKGROUND), atol=1e-5)


def test_zoom_matches_torchvision_affine(mnist):
    x = digits(mnist, 8)
    ours = common.affine(x, torch.full((8,), -5.0), zooms=torch.full((8,), 1.1))
    # TF.affine turns clockwise for a positive angle (TF.rotate counter-clockwise).
    theirs = TF.affine(x, angle=5.0, translate=[0, 0], scale=1.1, shear=[0.0],
                       interpolation=InterpolationMode.BILINEAR, fill=[common.BACKGROUND])
    assert (ours - theirs).abs().mean() < 0.05
