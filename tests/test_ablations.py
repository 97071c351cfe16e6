"""tools/ablations.py: each variant is step 3 with exactly its one change, and runs."""
import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

import ablations
import common
import step3_aug_sched as step3
from conftest import call


def make_variant(monkeypatch, name):
    ablations.apply(name, monkeypatch.setattr)


def seeded_net():
    common.seed_everything(3)
    return step3.Net()


def test_step3_variant_is_step3(monkeypatch):
    reference = seeded_net().state_dict()
    make_variant(monkeypatch, "step3")
    variant = seeded_net().state_dict()
    assert all(torch.equal(reference[key], variant[key]) for key in reference)


@pytest.mark.parametrize("name", sorted(ablations.VARIANTS))
def test_every_variant_keeps_the_budget_and_trains(monkeypatch, name, mnist):
    make_variant(monkeypatch, name)
    model = seeded_net()
    assert common.count_params(model) < 8000
    assert common.summarize(model)[-1]["rf"] >= 28
    optimizer, scheduler = step3.make_optimizer(model, SimpleNamespace(lr=0.1, epochs=1), 4)
    images, labels = mnist[0][:256], mnist[1][:256]
    stats = common.train_epoch(model, optimizer, scheduler, images, labels, 64,
                               torch.Generator().manual_seed(0), step3.AUGMENTATION)
    assert stats["train_loss"] > 0 and torch.isfinite(torch.tensor(stats["train_loss"]))


def test_layout_variants_change_only_what_they_say(monkeypatch):
    make_variant(monkeypatch, "dropout-after-pool")
    model = seeded_net()
    assert not any(isinstance(m, nn.Dropout) for m in model.block1.modules())
    assert isinstance(model.transition1[-1], nn.Dropout)
    # Same convolutions, in the same order, as step 3: same first draws, same weights.
    monkeypatch.undo()
    reference = seeded_net()
    assert torch.equal(model.block1[0][0].weight, reference.block1[0][0].weight)
    make_variant(monkeypatch, "wide-28x28")
    widths = [m.out_channels for m in seeded_net().modules() if isinstance(m, nn.Conv2d)]
    assert widths == [10, 10, 12, 14, 14, 16, 10]


@pytest.mark.parametrize("warp, size_name, size", [("affine_and_elastic", "ELASTIC_PIXELS", 2.0),
                                                    ("affine_and_shear", "SHEAR", 0.15)])
def test_extra_warp_of_size_zero_is_step3s_warp(monkeypatch, warp, size_name, size):
    images = torch.randn(6, 1, 28, 28)
    angles, zooms, shifts = common.random_affine(6, step3.AUGMENTATION, torch.Generator().manual_seed(0))
    monkeypatch.setattr(ablations, size_name, 0.0)
    still = getattr(ablations, warp)(images, angles, zooms, shifts)
    assert torch.allclose(still, common.affine(images, angles, zooms, shifts), atol=1e-5)
    monkeypatch.setattr(ablations, size_name, size)
    moved = getattr(ablations, warp)(images, angles, zooms, shifts)
    assert (moved - still).abs().max() > 0.1


def test_cli_lists_variants_and_runs_seeds(tmp_path, data_dir, monkeypatch):
    code, listing, _ = call(ablations.main, "--list")
    assert code == 0 and all(name in listing for name in ablations.VARIANTS)
    code, _, stderr = call(ablations.main, "no-such-variant", "--seeds", "1")
    assert code == 2 and "invalid choice" in stderr
    apply = ablations.apply  # in this process, make the variant so that the test undoes it
    monkeypatch.setattr(ablations, "apply", lambda name: apply(name, monkeypatch.setattr))
    code, stdout, stderr = call(ablations.main, "silu", "--seeds", "2,3", "--epochs", "1", "--subset", "500",
                                "--data-dir", data_dir, "--out", tmp_path, "--device", "cpu")
    assert code == 0, stderr
    assert "variant silu" in stdout
    for seed in (2, 3):
        record = json.loads((tmp_path / "seeds" / f"step3_aug_sched_seed{seed}.json").read_text())
        assert record["status"] == "complete" and record["params"] == 7662 and record["seed"] == seed
        assert f"| {seed} |" in (tmp_path / "seeds.md").read_text()


def test_seeds_side_by_side_match_seeds_one_after_another(tmp_path, data_dir):
    # Two processes of one thread each give what one thread in this process gives.
    quick = ["--epochs", "1", "--subset", "300", "--data-dir", data_dir, "--device", "cpu"]
    code, stdout, stderr = call(ablations.main, "step3", "--seeds", "4,5", "--jobs", "2", "--out",
                                tmp_path / "side", *quick)
    assert code == 0, stderr
    assert "seed 4: started" in stdout and "seed 5: final test accuracy" in stdout
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code, _, stderr = call(ablations.main, "step3", "--seeds", "5", "--out", tmp_path / "alone", *quick)
    finally:
        torch.set_num_threads(threads)
    assert code == 0, stderr
    side, alone = (json.loads((tmp_path / where / "seeds" / "step3_aug_sched_seed5.json").read_text())
                   for where in ("side", "alone"))
    assert side["threads"] == alone["threads"] == 1
    assert [e["test_acc"] for e in side["epochs"]] == [e["test_acc"] for e in alone["epochs"]]
    assert [e["train_loss"] for e in side["epochs"]] == [e["train_loss"] for e in alone["epochs"]]
    assert "| 4 |" in (tmp_path / "side" / "seeds.md").read_text()


def test_shear_slants_a_vertical_bar(monkeypatch):
    bar = torch.full((1, 1, 28, 28), common.BACKGROUND)
    bar[..., 13:15] = 2.0
    monkeypatch.setattr(ablations, "SHEAR", 0.3)
    monkeypatch.setattr(torch, "rand", lambda n: torch.ones(n))  # the largest slope
    slanted = ablations.affine_and_shear(bar, torch.zeros(1))
    top, bottom = slanted[0, 0, 2].argmax(), slanted[0, 0, 25].argmax()
    assert abs(int(top) - int(bottom)) >= 6  # 0.3 * 23 rows apart: about 7 columns


def test_max_pool_variant_is_plain_max_pools(monkeypatch):
    make_variant(monkeypatch, "max-pool")
    model = seeded_net()
    assert isinstance(model.transition1, nn.MaxPool2d) and isinstance(model.transition2, nn.MaxPool2d)
    assert common.summarize(model)[-1]["rf"] == 34


def test_step3_pool_halves_the_map_and_keeps_a_flat_one_flat():
    pool = step3.pool()
    flat = torch.full((2, 3, 8, 8), 5.0)
    out = pool(flat)
    assert out.shape == (2, 3, 4, 4)
    assert torch.allclose(out[..., 1:-1, 1:-1], torch.full_like(out[..., 1:-1, 1:-1], 5.0))  # edges see padding
    assert sum(p.numel() for p in pool.parameters()) == 0


def test_weight_decay_variant_reaches_the_optimizer(monkeypatch):
    make_variant(monkeypatch, "weight-decay-5e-4")
    optimizer, _ = step3.make_optimizer(seeded_net(), SimpleNamespace(lr=0.1, epochs=1), 4)
    assert optimizer.param_groups[0]["weight_decay"] == 5e-4
    monkeypatch.undo()
    optimizer, _ = step3.make_optimizer(seeded_net(), SimpleNamespace(lr=0.1, epochs=1), 4)
    assert optimizer.param_groups[0]["weight_decay"] == step3.WEIGHT_DECAY == 1e-4


def test_average_variant_tests_the_moving_average(monkeypatch, mnist):
    """With decay 0 the average is the model itself (weights and BatchNorm statistics); with
    decay 0.9 the test reads weights that lag behind the model's."""
    make_variant(monkeypatch, "average-floor-10")
    assert step3.RATE_FLOOR == 0.1
    images, labels = mnist[0][:500], mnist[1][:500]
    losses = {}  # (the test's, the model's own) test loss
    for decay in (0.0, 0.9):
        monkeypatch.setattr(ablations, "AVERAGE_DECAY", decay)
        model = seeded_net()
        optimizer, scheduler = step3.make_optimizer(model, SimpleNamespace(lr=0.1, epochs=1), 5)
        common.train_epoch(model, optimizer, scheduler, images, labels, 100,
                           torch.Generator().manual_seed(0), step3.AUGMENTATION)
        average = model.__dict__["average"].module
        same = all(torch.equal(a, b) for a, b in zip(average.state_dict().values(), model.state_dict().values()))
        assert same == (decay == 0.0)
        assert common.count_params(model) == 7662  # the average is not one of the model's modules
        test_images, test_labels = mnist[2][:1000], mnist[3][:1000]
        losses[decay] = (common.evaluate(model, test_images, test_labels)[0],
                         ablations.step3_evaluate(model, test_images, test_labels)[0])
    assert losses[0.0][0] == losses[0.0][1] and losses[0.9][0] != losses[0.9][1]


def test_plain_last_third_trains_the_last_third_on_plain_digits(monkeypatch, tmp_path, mnist):
    """Over 3 epochs: epochs 1-2 are step 3's, epoch 3 continues them without augmentation."""
    args = SimpleNamespace(epochs=3, batch_size=100, lr=0.1, subset=300)
    data = [t[:300] for t in mnist]

    def train_losses(name):
        record, _, _ = common.train_one_seed("step3_aug_sched", step3.Net, step3.make_optimizer, args, data,
                                             torch.device("cpu"), 1, tmp_path / f"{name}.json", step3.AUGMENTATION)
        return [e["train_loss"] for e in record["epochs"]]

    make_variant(monkeypatch, "conv-before-pool")  # the step 3 that plain-last-third changes
    augmented = train_losses("conv-before-pool")
    make_variant(monkeypatch, "plain-last-third")
    variant = train_losses("plain-last-third")
    assert variant[:2] == augmented[:2] and variant[2] != augmented[2]
    generator = common.seed_everything(1)  # the same run by hand: epoch 3 on plain digits
    model = step3.Net()
    common.summarize(model)
    optimizer, scheduler = ablations.step3_make_optimizer(model, args, 3)
    for augmentation, expected in zip([step3.AUGMENTATION] * 2 + [None], variant):
        stats = ablations.step3_train_epoch(model, optimizer, scheduler, data[0], data[1], 100, generator,
                                            augmentation)
        assert stats["train_loss"] == expected
