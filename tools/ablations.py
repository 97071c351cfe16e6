"""Step 3 on several seeds, as it is or with one thing changed, and its seeds table.

    python tools/ablations.py --list                                  # the variants
    python tools/ablations.py step3 --seeds 31,32,33 --jobs 2                     # as make seeds does
    python tools/ablations.py no-dropout --seeds 21,22,23 --jobs 2 --validation   # -> results/experiments/no-dropout/
    python tools/ablations.py widths-x0.7 --seeds 21,22,23 --jobs 2               # step 3 at 0.7x its widths

Each seed writes <out>/seeds/step3_aug_sched_seed<N>.json (with --validation, ..._validation.json),
and the seeds table of exactly those seeds is printed. With --jobs N, N seeds train side by side,
each in its own process with one thread (one core each); a seed run with one thread gives the
same numbers alone or beside others, while another thread count changes its last digits. Every
other option is step 3's own (`python step3_aug_sched.py --help`); a variant may change step 3's
defaults (its `settings`), and the options still override them. `make experiments` gathers every
variant's runs into EXPERIMENTS.md.
"""
import argparse
import ast
import hashlib
import inspect
import json
import os
import subprocess
import sys
import textwrap
import time
import weakref
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402
import report  # noqa: E402
import step3_aug_sched as step3  # noqa: E402

STEP = "step3_aug_sched"


@dataclass(frozen=True)
class Recipe:
    """What makes step 3 one variant: the pieces train_one_seed receives, step 3's own unless a variant
    names others. `net` builds the model; `augmentation` is a dict (see common.random_affine) or a
    function of (epoch, epochs) giving the epoch's; `test` is the evaluation pass (common.evaluate);
    `paired_with` the variant it is judged against; `decided` what its runs chose, and on which set;
    `settings` changes step 3's defaults (epochs, batch_size, lr), which the command line still overrides."""
    what: str
    net: Callable = step3.Net
    make_optimizer: Callable = step3.make_optimizer
    augmentation: object = field(default_factory=lambda: dict(step3.AUGMENTATION))
    settings: dict = field(default_factory=dict)
    test: Callable = common.evaluate
    paired_with: str = "step3"
    decided: str = ""

    def but(self, what, **changes):
        """This recipe with `what` described and `changes` made."""
        return replace(self, what=what, **changes)


def net(widths=step3.WIDTHS, *edits):
    """Step 3's Net (its one definition) at `widths`, then changed in place by each of `edits`."""
    def build():
        model = step3.Net(widths)
        for edit in edits:
            edit(model)
        return model
    return build


def swap(kind, make, under=""):
    """An edit: every `kind` layer (of the block named `under`, if given) replaced by make(layer)."""
    def edit(model):
        for name, module in list(model.named_modules()):
            for child_name, child in module.named_children():
                if isinstance(child, kind) and name.startswith(under):
                    setattr(module, child_name, make(child))
    return edit


def conv_before_pool(model):
    """An edit: the last 3x3 convolution before the second pool (14 -> 8, pooled to 4x4), not after it."""
    model.block2.append(model.block3)
    model.block3 = nn.Identity()


def plain_max_pool_first(model):
    model.transition1 = nn.MaxPool2d(2)


def separable(conv):
    """A depthwise-separable stand-in for a 3x3 convolution: a 3x3 per channel, then a 1x1 across channels
    (9 x in + in x out weights, not 9 x in x out)."""
    return nn.Sequential(nn.Conv2d(conv.in_channels, conv.in_channels, 3, groups=conv.in_channels, bias=False),
                         nn.Conv2d(conv.in_channels, conv.out_channels, 1, bias=False))


def scaled(factor):
    """Step 3's widths, each times `factor`, rounded: the frontier of sizes keeps its design."""
    return tuple(int(width * factor + 0.5) for width in step3.WIDTHS)


def plain_last_third(epoch, epochs):
    """Step 3's augmentation, none in the last third of the epochs."""
    return None if epoch > epochs - round(epochs / 3) else dict(step3.AUGMENTATION)


AVERAGE_DECAY = 0.999  # the moving average's weight on its past, per step: about 2 epochs
AVERAGES = weakref.WeakKeyDictionary()  # model -> its moving average, for evaluate_average


def make_optimizer_with_average(model, args, steps_per_epoch, decay=AVERAGE_DECAY, **schedule):
    """Step 3's optimiser (its `schedule` changed as given); after every step an exponential
    moving average of the weights and BatchNorm statistics is updated, kept beside the model
    (not one of its modules: it must not count as parameters), which the test pass reads."""
    optimizer, scheduler = step3.make_optimizer(model, args, steps_per_epoch, **schedule)
    average = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay), use_buffers=True)
    AVERAGES[model] = average
    optimizer.register_step_post_hook(lambda *_: average.update_parameters(model))
    return optimizer, scheduler


def evaluate_average(model, images, labels, batch_size=500):
    """common.evaluate on the model's moving average where it has one."""
    return common.evaluate(AVERAGES[model].module if model in AVERAGES else model, images, labels, batch_size)


STEP3 = Recipe("step 3 unchanged")
# The variants run on step 3 as it was with its last 3x3 convolution before the second pool are
# defined on that version, and paired with it.
BEFORE = STEP3.but("the last 3x3 convolution before the second pool (14 -> 8, pooled to 4x4, RF 28 before the "
                   "average), not after it (5 -> 3, RF 32)", net=net(step3.WIDTHS, conv_before_pool),
                   decided="step 3 put its last convolution after the second pool instead (a test-set choice)")


def identity(layer):
    return nn.Identity()


def whole_maps(layer):
    return nn.Dropout2d(layer.p)


no_dropout = swap(nn.Dropout, identity)
KEPT_DROPOUT = "step 3 kept its dropout (a test-set choice, seeds 21-30)"
VARIANTS = {
    "step3": STEP3,
    "conv-before-pool": BEFORE,
    "plain-last-third": BEFORE.but("conv-before-pool, and no augmentation in the last third of the epochs "
                                   "(11-15 of 15): the model ends on the digits as they are written",
                                   augmentation=plain_last_third, paired_with="conv-before-pool",
                                   decided="not adopted (test set)"),
    "average-floor-10": BEFORE.but("conv-before-pool, the rate's floor at 10% of its peak (step 3: 1%), and the "
                                   "test reads a moving average of the weights and BatchNorm statistics (decay "
                                   f"{AVERAGE_DECAY} per step)",
                                   make_optimizer=partial(make_optimizer_with_average, rate_floor=0.1),
                                   test=evaluate_average, paired_with="conv-before-pool",
                                   decided="not adopted (test set)"),
    "blur-second-only": BEFORE.but("conv-before-pool, and a plain max-pool after block 1, the anti-aliased one only "
                                   "after block 2 (the first pool's blur is most of its time)",
                                   net=net(step3.WIDTHS, conv_before_pool, plain_max_pool_first),
                                   paired_with="conv-before-pool", decided="not adopted (test set)"),
    "no-dropout": STEP3.but(f"no dropout (step 3: {step3.DROPOUT} after every ReLU)",
                            net=net(step3.WIDTHS, no_dropout), decided=KEPT_DROPOUT),
    "dropout-small-maps": STEP3.but("dropout only after the 3 convolutions that follow the first pool, none at "
                                    "28x28 (where most of its random masks are)",
                                    net=net(step3.WIDTHS, swap(nn.Dropout, identity, "block1")),
                                    decided=KEPT_DROPOUT),
    "dropout2d": STEP3.but(f"Dropout2d {step3.DROPOUT} (whole maps) instead of Dropout",
                           net=net(step3.WIDTHS, swap(nn.Dropout, whole_maps)),
                           decided=KEPT_DROPOUT),
}
FRONTIER = (0.45, 0.55, 0.7, 0.85)  # with step 3 (x1): about 1,600 to 7,700 parameters
for factor in FRONTIER:
    widths = scaled(factor)
    VARIANTS[f"widths-x{factor:g}"] = STEP3.but(
        f"every width x{factor:g}: 1 -> {' -> '.join(map(str, widths[:3]))} at 28x28, then "
        f"{' -> '.join(map(str, widths[3:]))} (the frontier of sizes)", net=net(widths))
# Designed for their size; EXPERIMENTS.md shows them beside the frontier.
SMALL_DESIGNS = ("separable-3.9k",)
VARIANTS["separable-3.9k"] = STEP3.but(
    "under 4,000 parameters by design: step 3's 28x28 block, then depthwise-separable convolutions "
    "12 -> 20 -> 24 -> 28 (each a 3x3 per channel and a 1x1 across)",
    net=net((8, 8, 12, 20, 24, 28), swap(nn.Conv2d, separable, "block2"), swap(nn.Conv2d, separable, "block3")),
    paired_with="widths-x0.7")
# More optimiser steps and no dropout for a network this small: the rate scales with the batch (0.1 at 128).
SMALL_DESIGNS += ("x0.7-batch64-no-dropout",)
VARIANTS["x0.7-batch64-no-dropout"] = VARIANTS["widths-x0.7"].but(
    "widths-x0.7 (3,833 parameters), no dropout, batches of 64 at a peak rate of 0.05: twice the optimiser "
    "steps per epoch", net=net(scaled(0.7), no_dropout), settings=dict(batch_size=64, lr=0.05),
    paired_with="widths-x0.7", decided="not chosen (validation)")
# Without dropout a step of widths-x0.7 takes about 0.6x the time: its random masks cost more than the convolutions.
SMALL_DESIGNS += ("x0.7-no-dropout", "separable-3.9k-no-dropout")
VARIANTS["x0.7-no-dropout"] = VARIANTS["widths-x0.7"].but(
    "widths-x0.7 (3,833 parameters) with no dropout: a network this small ends below its test accuracy on its "
    "augmented training digits", net=net(scaled(0.7), no_dropout), paired_with="widths-x0.7",
    decided="the base of the designs after it: no worse than widths-x0.7 on validation, and faster")
VARIANTS["separable-3.9k-no-dropout"] = VARIANTS["separable-3.9k"].but(
    "separable-3.9k (3,898 parameters) with no dropout: x0.7-no-dropout's size, wider after the first pool",
    net=net((8, 8, 12, 20, 24, 28), swap(nn.Conv2d, separable, "block2"), swap(nn.Conv2d, separable, "block3"),
            no_dropout), paired_with="x0.7-no-dropout",
    decided="not chosen: screened on 3 validation seeds, behind x0.7-no-dropout, and slower")
# Gentler warps for a network this small: x0.7-no-dropout still reads its warped training digits worse than the test's.
SMALL_DESIGNS += ("x0.7-no-dropout-mild-warps",)
VARIANTS["x0.7-no-dropout-mild-warps"] = VARIANTS["x0.7-no-dropout"].but(
    "x0.7-no-dropout with gentler warps: up to 7 degrees, 7% zoom and 1.5 px shift (step 3: 10, 10% and 2)",
    augmentation=dict(degrees=7.0, zoom=0.07, shift=1.5), paired_with="x0.7-no-dropout",
    decided="not chosen (validation)")

# Changes that cost no parameter, screened on x0.7-no-dropout on the validation split (paired, seeds 21-30).
SMALL_DESIGNS += ("x0.7-no-dropout-average", "x0.7-no-dropout-cosine-to-end")
VARIANTS["x0.7-no-dropout-average"] = VARIANTS["x0.7-no-dropout"].but(
    f"x0.7-no-dropout, and the test reads a moving average of the weights and BatchNorm statistics (decay "
    f"{AVERAGE_DECAY} per step: about 1,000 steps, 2 epochs)", make_optimizer=make_optimizer_with_average,
    test=evaluate_average, paired_with="x0.7-no-dropout",
    decided="a gain (validation); nothing more beside the cosine to the end (x0.7-no-dropout-average-cosine-to-end)")
VARIANTS["x0.7-no-dropout-cosine-to-end"] = VARIANTS["x0.7-no-dropout"].but(
    "x0.7-no-dropout with the cosine falling to the floor at the last step (step 3: by 75% of the steps, "
    "then flat)", make_optimizer=partial(step3.make_optimizer, anneal_end=1.0), paired_with="x0.7-no-dropout",
    decided="a gain (validation), and the design chosen: run once on the report seeds 41-50")
# The two gains together, judged against the larger of them alone.
SMALL_DESIGNS += ("x0.7-no-dropout-average-cosine-to-end",)
VARIANTS["x0.7-no-dropout-average-cosine-to-end"] = VARIANTS["x0.7-no-dropout-cosine-to-end"].but(
    "x0.7-no-dropout-cosine-to-end, and the test reads the moving average of x0.7-no-dropout-average",
    make_optimizer=partial(make_optimizer_with_average, anneal_end=1.0), test=evaluate_average,
    paired_with="x0.7-no-dropout-cosine-to-end", decided="not chosen (validation): no gain over the cosine alone")

# The two gains of x0.7-no-dropout, each judged on step 3 itself (validation, paired, seeds 21-30).
VARIANTS["step3-average"] = STEP3.but(
    f"the test reads a moving average of the weights and BatchNorm statistics (decay {AVERAGE_DECAY} per step, as "
    "x0.7-no-dropout-average)", make_optimizer=make_optimizer_with_average, test=evaluate_average,
    decided="not adopted (validation): no gain in the final epoch, a loss in the worst of the last 5")
VARIANTS["step3-cosine-to-end"] = STEP3.but(
    "the cosine falling to the floor at the last step, not by 75% of the steps (as x0.7-no-dropout-cosine-to-end)",
    make_optimizer=partial(step3.make_optimizer, anneal_end=1.0),
    decided="not adopted (validation): stopped after 4 seeds, a clear loss in the worst of the last 5")


def describe(thing):
    """A recipe's piece as text that changes exactly when what it does changes. A function of this file: its code
    (parsed: no docstring, comment or layout), its defaults, and the values it closes over and the names of this
    file it reads, each described in turn; a partial: its function and arguments; step 3's, common's and torch's
    functions and classes by name (a run's code fingerprint and torch version cover them); data by its value."""
    if isinstance(thing, partial):
        return f"partial({describe(thing.func)}, {describe(thing.args)}, {describe(thing.keywords)})"
    if inspect.isfunction(thing) and thing.__module__ == __name__:
        tree = ast.parse(textwrap.dedent(inspect.getsource(thing)))
        for node in ast.walk(tree):  # docstrings quote results and say why: not what runs
            body = getattr(node, "body", None)
            if (isinstance(node, (ast.FunctionDef, ast.ClassDef)) and isinstance(body[0], ast.Expr)
                    and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
        names, codes = set(), [thing.__code__]
        while codes:  # the global names it and the functions nested in it read
            code = codes.pop()
            names.update(code.co_names)
            codes += [c for c in code.co_consts if inspect.iscode(c)]
        read = {name: thing.__globals__[name] for name in sorted(names) if name in thing.__globals__
                and not inspect.ismodule(thing.__globals__[name]) and name != thing.__name__}
        closure = inspect.getclosurevars(thing).nonlocals
        return (f"{ast.unparse(tree)}\ndefaults {describe(thing.__defaults__)} {describe(thing.__kwdefaults__)}\n"
                f"closure {describe(closure)}\nreads {describe(read)}")
    if callable(thing):
        return f"{getattr(thing, '__module__', '')}.{getattr(thing, '__qualname__', type(thing).__qualname__)}"
    if isinstance(thing, dict):
        return "{" + ", ".join(f"{key!r}: {describe(value)}" for key, value in sorted(thing.items())) + "}"
    if isinstance(thing, (list, tuple)):
        return "(" + ", ".join(map(describe, thing)) + ")"
    if thing is None or isinstance(thing, (bool, int, float, str)):
        return repr(thing)
    return type(thing).__qualname__  # an object made at import (the averages' registry): no value to compare


def recipe_fingerprint(recipe):
    """SHA-256 (12 hex digits) of what trains a variant: its pieces (`describe`) and its resolved settings; not its
    description, pairing or decision, nor any other variant."""
    pieces = dict(net=recipe.net, make_optimizer=recipe.make_optimizer, augmentation=recipe.augmentation,
                  test=recipe.test, settings={**step3.SETTINGS, **recipe.settings})
    return hashlib.sha256(describe(pieces).encode()).hexdigest()[:12]


def record_path(out, seed, validation, suffix=".json"):
    """<out>/seeds/step3_aug_sched_seed<N>.json, or ..._seed<N>_validation.json: one seed's record on either set."""
    return out / "seeds" / f"{STEP}_seed{seed}{'_validation' if validation else ''}{suffix}"


def train_seeds(name, seeds, args, out):
    """Train variant `name` once per seed in this process."""
    recipe = VARIANTS[name]
    device = common.pick_device(args.device)
    data = common.load_mnist(args.data_dir, device, args.subset, args.validation)
    for seed in seeds:
        print(f"--- seed {seed}", flush=True)
        common.train_one_seed(STEP, recipe.net, recipe.make_optimizer, args, data, device, seed,
                              record_path(out, seed, args.validation), recipe.augmentation, name, recipe.test,
                              None if name == "step3" else recipe_fingerprint(recipe))


def write_variants_json(path):
    """What report.py needs of the variants (so that it need not import this file): what each changes, what it
    is paired with, what its runs decided, the group of the frontier's figure it belongs to, and the fingerprints
    that a run of it would record now (the code's, and its recipe's: none for step 3 itself)."""
    groups = {"step3": "frontier", **{f"widths-x{f:g}": "frontier" for f in FRONTIER},
              **dict.fromkeys(SMALL_DESIGNS, "design")}
    code = common.provenance(STEP, None, torch.device("cpu"), "step3")["code_fingerprint"]
    common.write_atomically(path, json.dumps({name: dict(
        what=r.what, paired_with=r.paired_with, decided=r.decided,
        **({"group": groups[name]} if name in groups else {}),
        code_fingerprint=code, recipe_fingerprint=None if name == "step3" else recipe_fingerprint(r))
        for name, r in VARIANTS.items()}, indent=1) + "\n")


def train_side_by_side(variant, seeds, jobs, step_argv, out, validation):
    """One process per seed, `jobs` at a time, one thread each; output in <out>/seeds/*.log."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    waiting, running = list(seeds), {}
    while waiting or running:
        while waiting and len(running) < jobs:
            seed = waiting.pop(0)
            log = record_path(out, seed, validation, ".log")
            command = [sys.executable, __file__, variant, "--seeds", str(seed), "--out", str(out), *step_argv]
            with log.open("w") as output:  # the child keeps its own handle
                running[seed] = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
            print(f"seed {seed}: started, log in {log}", flush=True)
        time.sleep(1)
        for seed, process in list(running.items()):
            if process.poll() is None:
                continue
            del running[seed]
            if process.returncode != 0:
                for other in running.values():
                    other.terminate()
                raise common.UserError(f"seed {seed} failed (exit {process.returncode}); see "
                                       f"{record_path(out, seed, validation, '.log')}")
            record = report.read_runs([record_path(out, seed, validation)])[0]
            split = record["evaluated_on"]
            print(f"seed {seed}: final {split} accuracy {record['epochs'][-1][f'{split}_acc']:.2f}%", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Every other option is step 3's: see `python step3_aug_sched.py --help`.")
    parser.add_argument("variant", nargs="?", choices=VARIANTS, metavar="VARIANT",
                        help="which change to make: " + ", ".join(VARIANTS))
    parser.add_argument("--list", action="store_true", help="describe every variant and stop")
    parser.add_argument("--variants-json", metavar="PATH", help="write every variant's description there and stop")
    parser.add_argument("--seeds", type=seed_list, help="the seeds to train, e.g. 1,2,3")
    parser.add_argument("--jobs", type=int, default=1,
                        help="seeds trained side by side, one process and one thread each")
    parser.add_argument("--out", help="folder for the JSONs (default results/experiments/VARIANT)")
    known, step_argv = parser.parse_known_args(argv)
    if known.variants_json:
        return write_variants_json(known.variants_json)
    if known.list or known.variant is None:
        width = max(map(len, VARIANTS))
        print("\n".join(f"{name:{width}}  {recipe.what}" for name, recipe in VARIANTS.items()))
        return
    if not known.seeds:
        parser.error("--seeds is required, e.g. --seeds 1,2,3")
    out = Path(known.out or f"results/experiments/{known.variant}")
    (out / "seeds").mkdir(parents=True, exist_ok=True)
    args = common.parse_args(step3.__doc__, {**step3.SETTINGS, **VARIANTS[known.variant].settings},
                             step_argv)  # step 3's options, checked
    print(f"variant {known.variant}: {VARIANTS[known.variant].what}", flush=True)
    if known.jobs > 1 and len(known.seeds) > 1:
        train_side_by_side(known.variant, known.seeds, known.jobs, step_argv, out, args.validation)
    else:
        train_seeds(known.variant, known.seeds, args, out)
    runs = report.read_runs([record_path(out, seed, args.validation) for seed in known.seeds])
    print(report.seeds_table(sorted(runs, key=lambda r: r["seed"])))


def seed_list(text):
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct seeds like 1,2,3, got {text}")
    return seeds


if __name__ == "__main__":
    common.main_guard(main)
