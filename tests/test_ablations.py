"""tools/ablations.py: each variant is a recipe that changes what its description says and
nothing else, without touching step 3 or common; the schedule; the command line."""
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

import ablations
import common
import step3_aug_sched as step3
from conftest import call

EPOCHS, STEPS_PER_EPOCH = 15, 20  # a whole run of the schedule, 300 steps


def fingerprint(recipe):
    """Everything a variant may change, as data: layers, sizes, augmentation per epoch, the rate
    at every step of a 15-epoch run, weight decay, the test pass and the dropout classes."""
    torch.manual_seed(0)
    model = recipe.net()
    rows = common.summarize(model)
    optimizer, scheduler = recipe.make_optimizer(model, SimpleNamespace(lr=0.1, epochs=EPOCHS), STEPS_PER_EPOCH)
    rates = []
    for _ in range(EPOCHS * STEPS_PER_EPOCH):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    augmentation = [recipe.augmentation(epoch, EPOCHS) if callable(recipe.augmentation) else recipe.augmentation
                    for epoch in range(1, EPOCHS + 1)]
    return dict(layers=[r["layer"] for r in rows], shapes=[r["shape"] for r in rows],
                params=common.count_params(model), macs=sum(r["macs"] for r in rows), rf=rows[-1]["rf"],
                augmentation=augmentation, rates=rates, weight_decay=optimizer.param_groups[0]["weight_decay"],
                test=recipe.test, model=model, settings={**step3.SETTINGS, **recipe.settings},
                dropout={type(m) for m in model.modules() if isinstance(m, nn.Dropout)})


# variant: (the recipe it is built from, what differs from it). Layer lists change their
# shapes list too (one entry per layer).
CHANGES = {
    "step3": ("step3", set()),
    "no-dropout": ("step3", {"layers", "dropout"}),
    "dropout-small-maps": ("step3", {"layers"}),
    "conv-before-pool": ("step3", {"layers", "shapes", "macs"}),
    "plain-last-third": ("conv-before-pool", {"augmentation"}),
    "average-floor-10": ("conv-before-pool", {"rates", "test"}),
    "blur-second-only": ("conv-before-pool", {"layers", "shapes", "macs", "rf"}),
    "dropout2d": ("step3", {"layers", "dropout"}),
    **{f"widths-x{factor:g}": ("step3", {"shapes", "params", "macs"}) for factor in ablations.FRONTIER},
    "separable-3.9k": ("step3", {"layers", "shapes", "params", "macs"}),
    "x0.7-batch64-no-dropout": ("widths-x0.7", {"layers", "dropout", "settings"}),
    "x0.7-no-dropout": ("widths-x0.7", {"layers", "dropout"}),
    "separable-3.9k-no-dropout": ("separable-3.9k", {"layers", "dropout"}),
    "x0.7-no-dropout-mild-warps": ("x0.7-no-dropout", {"augmentation"}),
    "x0.7-no-dropout-average": ("x0.7-no-dropout", {"test"}),
    "x0.7-no-dropout-cosine-to-end": ("x0.7-no-dropout", {"rates"}),
    "x0.7-no-dropout-average-cosine-to-end": ("x0.7-no-dropout-cosine-to-end", {"test"}),
    "step3-average": ("step3", {"test"}),
    "step3-cosine-to-end": ("step3", {"rates"}),
}


def test_every_variant_is_listed_here():
    assert set(CHANGES) == set(ablations.VARIANTS)


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_each_variant_changes_what_it_says_and_nothing_else(name):
    base, expected = CHANGES[name]
    variant, reference = fingerprint(ablations.VARIANTS[name]), fingerprint(ablations.VARIANTS[base])
    assert {key for key in variant if key != "model" and variant[key] != reference[key]} == expected
    assert variant["params"] < 8000


def convs(model):
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


def after_each(layers, kind, extra):
    out = []
    for layer in layers:
        out += [layer, extra] if layer == kind else [layer]
    return out


def test_the_changes_are_the_ones_described():
    v = {name: fingerprint(recipe) for name, recipe in ablations.VARIANTS.items()}
    step = v["step3"]
    DROPOUT = "DropoutByGaps"  # step 3's dropout: nn.Dropout drawing only the gaps between drops (common.py)
    without = [layer for layer in step["layers"] if layer != DROPOUT]
    assert step["layers"] == after_each(without, "ReLU", DROPOUT)  # dropout after every ReLU
    assert {m.p for m in step["model"].modules() if isinstance(m, nn.Dropout)} == {0.05}
    assert step["dropout"] == {common.DropoutByGaps}
    assert v["no-dropout"]["layers"] == ["Identity" if layer == DROPOUT else layer for layer in step["layers"]]
    first_pool = step["layers"].index("BinomialBlur") + 1  # the layers up to it are at 28x28
    at_28 = ["Identity" if layer == DROPOUT else layer for layer in step["layers"][:first_pool]]
    assert v["dropout-small-maps"]["layers"] == at_28 + step["layers"][first_pool:]
    assert v["dropout2d"]["layers"] == ["Dropout2d" if layer == DROPOUT else layer for layer in step["layers"]]
    assert v["blur-second-only"]["layers"].count("BinomialBlur") == 1
    # conv-before-pool: the last 3x3 convolution at 10 -> 8, pooled to 4x4 (step 3: pool to 5, then 3)
    assert (16, 4, 4) in v["conv-before-pool"]["shapes"] and (16, 3, 3) in step["shapes"]
    assert convs(step["model"]) == [8, 8, 12, 14, 16, 16, 10]
    assert convs(v["widths-x0.7"]["model"]) == [6, 6, 8, 10, 11, 11, 10]
    assert [v[f"widths-x{f:g}"]["params"] for f in ablations.FRONTIER] == [1595, 2495, 3833, 5768]
    # depthwise (groups = channels) 3x3, then 1x1, for each convolution after the first pool
    separable = [(m.in_channels, m.out_channels, m.kernel_size[0], m.groups)
                 for m in v["separable-3.9k"]["model"].modules() if isinstance(m, nn.Conv2d)]
    assert separable[3:9] == [(12, 12, 3, 12), (12, 20, 1, 1), (20, 20, 3, 20), (20, 24, 1, 1), (24, 24, 3, 24),
                              (24, 28, 1, 1)]
    assert v["separable-3.9k"]["params"] == 3898 < 4000
    small = v["x0.7-batch64-no-dropout"]
    assert small["dropout"] == set() and small["params"] == v["widths-x0.7"]["params"] == 3833
    assert small["settings"] == dict(step["settings"], batch_size=64, lr=0.05)  # the rate per image kept
    assert small["settings"]["lr"] / 64 == step["settings"]["lr"] / step["settings"]["batch_size"]
    assert v["plain-last-third"]["augmentation"] == [step3.AUGMENTATION] * 10 + [None] * 5
    assert v["average-floor-10"]["rates"][-1] == pytest.approx(0.1 * 0.1)


def test_step3_schedule_over_a_whole_run():
    """Starts at 4% of the peak, peaks at 20% of the steps, sits at the floor (1%) from 75%."""
    rates = fingerprint(ablations.STEP3)["rates"]
    total, peak = len(rates), 0.1
    assert rates[0] == pytest.approx(0.04 * peak)
    assert max(rates) == pytest.approx(peak) and rates.index(max(rates)) == 0.2 * total
    assert all(a < b for a, b in zip(rates[:60], rates[1:61]))  # rising to the peak
    assert all(a > b for a, b in zip(rates[60:225], rates[61:226]))  # falling to the floor
    assert rates[225:] == pytest.approx([0.01 * peak] * (total - 225))
    assert rates[224] > 0.01 * peak * 1.0001  # not at the floor before 75%


def test_variants_build_on_step3s_one_net():
    """A variant edits step 3's Net: with no edit, the same seed gives step 3's weights and outputs."""
    torch.manual_seed(3)
    reference = step3.Net().eval()
    torch.manual_seed(3)
    built = ablations.net()().eval()
    assert [p.tolist() for p in reference.parameters()] == [p.tolist() for p in built.parameters()]
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(reference(x), built(x))


def test_running_a_variant_changes_nothing_another_command_sees(mnist, tmp_path):
    """A variant is data passed to train_one_seed: step 3 and common are as they were after."""
    def snapshot(module):
        return {name: value for name, value in vars(module).items() if not name.startswith("__")}
    before = snapshot(step3), snapshot(common)
    for name in ("no-dropout", "average-floor-10", "plain-last-third", "separable-3.9k"):
        recipe = ablations.VARIANTS[name]
        args = SimpleNamespace(epochs=1, batch_size=100, lr=0.1, subset=200)
        common.train_one_seed("step3_aug_sched", recipe.net, recipe.make_optimizer, args, [t[:200] for t in mnist],
                              torch.device("cpu"), 1, tmp_path / f"{name}.json", recipe.augmentation, name,
                              recipe.test, ablations.recipe_fingerprint(recipe))
        record = json.loads((tmp_path / f"{name}.json").read_text())
        assert record["variant"] == name and "constants" not in record and len(record["recipe_fingerprint"]) == 12
    after = snapshot(step3), snapshot(common)
    for old, new in zip(before, after):
        assert old.keys() == new.keys() and all(old[key] is new[key] for key in old)


def test_cli_lists_variants_and_runs_seeds(tmp_path, data_dir):
    code, listing, _ = call(ablations.main, "--list")
    assert code == 0 and all(name in listing for name in ablations.VARIANTS)
    code, _, stderr = call(ablations.main, "no-such-variant", "--seeds", "1")
    assert code == 2 and "invalid choice" in stderr
    code, stdout, stderr = call(ablations.main, "no-dropout", "--seeds", "2,3", "--epochs", "1", "--subset", "500",
                                "--data-dir", data_dir, "--out", tmp_path, "--device", "cpu", "--validation")
    assert code == 0, stderr
    assert "variant no-dropout" in stdout
    for seed in (2, 3):
        record = json.loads((tmp_path / "seeds" / f"step3_aug_sched_seed{seed}_validation.json").read_text())
        assert record["status"] == "complete" and record["params"] == 7662 and record["seed"] == seed
        assert record["variant"] == "no-dropout" and len(record["commit"]) == 40
        assert record["evaluated_on"] == "validation" and "validation_acc" in record["epochs"][0]
        assert f"| {seed} |" in stdout  # the seeds table of exactly the seeds run
    code, _, stderr = call(ablations.main, "--variants-json", tmp_path / "variants.json")
    variants = json.loads((tmp_path / "variants.json").read_text())
    recipe = ablations.VARIANTS["plain-last-third"]
    assert variants["plain-last-third"] == {
        "what": recipe.what, "paired_with": "conv-before-pool", "decided": "not adopted (test set)",
        "code_fingerprint": record["code_fingerprint"], "recipe_fingerprint": ablations.recipe_fingerprint(recipe)}
    assert variants["step3"]["recipe_fingerprint"] is None  # step 3 itself: its code fingerprint says it all


def test_a_variants_settings_are_its_defaults_and_options_override_them(tmp_path, data_dir):
    quick = ["--seeds", "1", "--epochs", "1", "--subset", "256", "--data-dir", data_dir, "--device", "cpu"]
    for out, options, expected in (("own", [], (64, 0.05)), ("override", ["--batch-size", "32"], (32, 0.05))):
        code, _, stderr = call(ablations.main, "x0.7-batch64-no-dropout", *quick, "--out", tmp_path / out, *options)
        assert code == 0, stderr
        settings = json.loads((tmp_path / out / "seeds" / "step3_aug_sched_seed1.json").read_text())["settings"]
        assert (settings["batch_size"], settings["lr"]) == expected


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
    assert "| 4 |" in stdout and "| 5 |" in stdout


def test_step3_pool_halves_the_map_and_keeps_a_flat_one_flat():
    pool = step3.pool()
    flat = torch.full((2, 3, 8, 8), 5.0)
    out = pool(flat)
    assert out.shape == (2, 3, 4, 4)
    assert torch.allclose(out[..., 1:-1, 1:-1], torch.full_like(out[..., 1:-1, 1:-1], 5.0))  # edges see padding
    assert sum(p.numel() for p in pool.parameters()) == 0


@pytest.mark.parametrize("decay", [0.0, 0.9])
def test_average_variant_tests_the_moving_average(mnist, decay):
    """With decay 0 the average is the model itself (weights and BatchNorm statistics); with
    decay 0.9 the test reads weights that lag behind the model's."""
    torch.manual_seed(3)
    model = ablations.VARIANTS["average-floor-10"].net()
    optimizer, scheduler = ablations.make_optimizer_with_average(model, SimpleNamespace(lr=0.1, epochs=1), 5,
                                                                 decay=decay)
    common.train_epoch(model, optimizer, scheduler, mnist[0][:500], mnist[1][:500], 100,
                       torch.Generator().manual_seed(0), step3.AUGMENTATION)
    average = ablations.AVERAGES[model].module
    same = all(torch.equal(a, b) for a, b in zip(average.state_dict().values(), model.state_dict().values()))
    assert same == (decay == 0.0)
    assert common.count_params(model) == 7662  # the average is not one of the model's modules
    test_images, test_labels = mnist[2][:1000], mnist[3][:1000]
    own = common.evaluate(model, test_images, test_labels)[0]
    assert (ablations.evaluate_average(model, test_images, test_labels)[0] == own) == (decay == 0.0)


def test_plain_last_third_trains_the_last_third_on_plain_digits(tmp_path, mnist):
    """Over 3 epochs: epochs 1-2 are conv-before-pool's, epoch 3 continues them without augmentation."""
    args = SimpleNamespace(epochs=3, batch_size=100, lr=0.1, subset=300)
    data = [t[:300] for t in mnist]

    def train_losses(name):
        recipe = ablations.VARIANTS[name]
        record, _, _ = common.train_one_seed("step3_aug_sched", recipe.net, recipe.make_optimizer, args, data,
                                             torch.device("cpu"), 1, tmp_path / f"{name}.json", recipe.augmentation)
        return [e["train_loss"] for e in record["epochs"]]

    augmented, variant = train_losses("conv-before-pool"), train_losses("plain-last-third")
    assert variant[:2] == augmented[:2] and variant[2] != augmented[2]
    torch.manual_seed(1)  # the same run by hand: epoch 3 on plain digits
    generator = torch.Generator().manual_seed(1)
    model = ablations.VARIANTS["conv-before-pool"].net().to(memory_format=torch.channels_last)  # as train_one_seed
    common.summarize(model)
    optimizer, scheduler = step3.make_optimizer(model, args, 3)
    for augmentation, expected in zip([step3.AUGMENTATION] * 2 + [None], variant):
        stats = common.train_epoch(model, optimizer, scheduler, data[0], data[1], 100, generator, augmentation)
        assert stats["train_loss"] == expected


def test_make_frontier_trains_the_frontiers_variants():
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    line = next(line for line in makefile.splitlines() if line.startswith("FRONTIER :="))
    assert line.split(":=")[1].split() == [f"widths-x{factor:g}" for factor in ablations.FRONTIER]


def load_edited_ablations(tmp_path, edit):
    """tools/ablations.py with its text changed by `edit`, imported as a module of its own."""
    import importlib.util
    import sys
    path = tmp_path / "ablations_edited.py"
    path.write_text(edit(Path(ablations.__file__).read_text()))
    spec = importlib.util.spec_from_file_location("ablations_edited", path)
    module = sys.modules["ablations_edited"] = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["ablations_edited"]
    return module


def fingerprints(module):
    return {name: module.recipe_fingerprint(recipe) for name, recipe in module.VARIANTS.items()}


def test_a_variants_fingerprint_is_what_trains_it_not_the_file_that_lists_it(tmp_path):
    now = fingerprints(ablations)
    assert len(set(now.values())) == len(now)  # no two variants train alike
    # Another variant's description edited, a decision recorded, a comment and a variant added: no fingerprint moves.
    added = '\nVARIANTS["x0.7-lr-0.2"] = VARIANTS["x0.7-no-dropout"].but("a new one", settings=dict(lr=0.2))\n'
    edited = load_edited_ablations(tmp_path, lambda text: text.replace(
        "x0.7-no-dropout with gentler warps", "x0.7-no-dropout, its warps gentler").replace(
        'decided="not chosen (validation)")', 'decided="something else")').replace(
        "def record_path(", "# a comment\ndef record_path(") + added)
    changed = fingerprints(edited)
    assert edited.VARIANTS["x0.7-no-dropout-mild-warps"].what != ablations.VARIANTS["x0.7-no-dropout-mild-warps"].what
    assert {name: changed[name] for name in now} == now
    assert changed["x0.7-lr-0.2"] not in now.values()  # its settings differ
    # What trains a variant does move it: a helper's code moves exactly the variants that use it.
    edited = load_edited_ablations(tmp_path, lambda text: text.replace(
        "    return nn.Dropout2d(layer.p)", "    return nn.Dropout2d(layer.p / 2)"))
    moved = {name for name, fingerprint in fingerprints(edited).items() if fingerprint != now[name]}
    assert moved == {"dropout2d"}
    edited = load_edited_ablations(tmp_path, lambda text: text.replace(
        "AVERAGE_DECAY = 0.999", "AVERAGE_DECAY = 0.998"))
    moved = {name for name, fingerprint in fingerprints(edited).items() if fingerprint != now[name]}
    assert moved == {"average-floor-10", "x0.7-no-dropout-average", "x0.7-no-dropout-average-cosine-to-end",
                     "step3-average"}


def test_the_report_tool_imports_nothing_of_the_variants():
    """report.py reads what it needs of the variants from variants.json: the two tools do not import each other."""
    import ast
    tree = ast.parse((Path(__file__).resolve().parents[1] / "tools" / "report.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "ablations" not in imported and "bench" not in imported
