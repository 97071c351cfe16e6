"""Step 3 on several seeds, as it is or with one thing changed, and its seeds table.

    python tools/ablations.py --list                                  # the variants
    python tools/ablations.py step3 --seeds 1,2,3,4,5 --jobs 2        # make seeds
    python tools/ablations.py silu --seeds 21,22,23 --jobs 2          # -> results/experiments/silu/
    python tools/ablations.py widths-x0.7 --seeds 21,22,23 --jobs 2   # step 3 at 0.7x its widths (make frontier)

Each seed writes <out>/seeds/step3_aug_sched_seed<N>.json; then <out>/seeds.md is built
from them (tools/report.py). With --jobs N, N seeds train side by side, each in its own
process with one thread (one core each); a seed run with one thread gives the same numbers
alone or beside others, while another thread count changes its last digits. Every other
option is step 3's own (`python step3_aug_sched.py --help`), so changes of batch size or
rate need no variant. `make experiments` gathers every variant into EXPERIMENTS.md.
"""
import argparse
import json
import os
import subprocess
import sys
import time
import weakref
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402
import report  # noqa: E402
import step3_aug_sched as step3  # noqa: E402

STEP = "step3_aug_sched"
DROPOUT = step3.DROPOUT  # the dropout of the variants that place it elsewhere
WIDTHS = dict(block1=(8, 8, 12), block2=(14, 16, 16))  # step 3's


@dataclass(frozen=True)
class Recipe:
    """What makes step 3 one variant: the data train_one_seed receives, step 3's own pieces
    unless a variant names others. `augmentation` is a dict (see common.random_affine) or a
    function of (epoch, epochs) giving the epoch's; `warp` resamples a batch (common.affine);
    `test` is the test pass (common.evaluate); `paired_with` the variant it is judged against."""
    what: str
    net: type = step3.Net
    make_optimizer: Callable = step3.make_optimizer
    augmentation: object = field(default_factory=lambda: dict(step3.AUGMENTATION))
    warp: Callable = common.affine
    test: Callable = common.evaluate
    paired_with: str = "step3"

    def but(self, what, **changes):
        """This recipe with `what` described and `changes` made."""
        return replace(self, what=what, **changes)


def conv_bn_with(activation=nn.ReLU, dropout=None):
    """step3.conv_bn with another activation, and a dropout layer (a class) after it."""
    def conv_bn(in_channels, out_channels, padding=0):
        layers = [nn.Conv2d(in_channels, out_channels, 3, padding=padding, bias=False),
                  nn.BatchNorm2d(out_channels), activation()]
        return nn.Sequential(*layers, *([dropout(DROPOUT)] if dropout else []))
    return conv_bn


def layout(block1=WIDTHS["block1"], block2=WIDTHS["block2"], conv=step3.conv_bn, pool=step3.pool, conv_28=None,
           first_pool=None, dropout_after_pool=False, last_after_pool=True, squeeze_excite=False):
    """Step 3's network from its pieces, with other ones where a variant says: `block1` = the
    channels of the three padded 28x28 convolutions, `block2` = those of the three unpadded ones
    after the first pool, the last of them after the second pool (14 -> 10, pool, 5 -> 3); with
    `last_after_pool=False` before it (14 -> 8, pool to 4x4); `conv_28`, if given, makes the 28x28
    ones (else `conv`). With the defaults it is step 3's
    Net: same layers, created in the same order, so the same seed gives the same weights."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            a, b, c = block1
            conv_first = conv_28 or conv
            self.block1 = nn.Sequential(conv_first(1, a, 1), conv_first(a, b, 1), conv_first(b, c, 1))
            dropout = [step3.Dropout(DROPOUT)] if dropout_after_pool else []
            self.transition1 = nn.Sequential((first_pool or pool)(), *dropout)
            d, e, f = block2
            middle = [conv(c, d), conv(d, e), conv(e, f)]
            self.block2 = nn.Sequential(*middle[:2 if last_after_pool else 3])
            self.transition2 = nn.Sequential(pool(), *(middle[2:] if last_after_pool else []))
            if squeeze_excite:
                self.block1.append(SqueezeExcite(c))
                self.block2.append(SqueezeExcite(middle[1 if last_after_pool else 2][0].out_channels))
            self.output = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(f, 10, 1), nn.Flatten())

        def forward(self, x):
            return self.output(self.transition2(self.block2(self.transition1(self.block1(x)))))
    return Net


def scaled(factor):
    """Step 3's widths, each times `factor`, rounded: the frontier of sizes keeps its design."""
    return {block: tuple(int(width * factor + 0.5) for width in widths) for block, widths in WIDTHS.items()}


def separable_conv_bn(in_channels, out_channels, padding=0, dropout=DROPOUT):
    """A depthwise-separable 3x3 convolution (a 3x3 per channel, then a 1x1 across channels:
    9 x in + in x out weights, not 9 x in x out) -> BatchNorm -> ReLU -> dropout (none if 0)."""
    return nn.Sequential(nn.Conv2d(in_channels, in_channels, 3, padding=padding, groups=in_channels, bias=False),
                         nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
                         nn.ReLU(), *([step3.Dropout(dropout)] if dropout else []))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): each channel scaled by a gate in (0, 1)
    computed from the average of all channels over the whole map."""
    def __init__(self, channels, reduction=4):
        super().__init__()
        self.gate = nn.Sequential(nn.Conv2d(channels, channels // reduction, 1), nn.ReLU(),
                                  nn.Conv2d(channels // reduction, channels, 1), nn.Sigmoid())

    def forward(self, x):
        # The mean as a tensor op, not a pooling layer: the summary's receptive field is
        # that of the path through the convolutions.
        return x * self.gate(x.mean((2, 3), keepdim=True))


ELASTIC_PIXELS = 2.0  # largest displacement of the elastic variant's random field
ELASTIC_POINTS = 4  # its control points per side: smooth over about 9 pixels
SHEAR = 0.15  # largest horizontal shear of the shear variant (x moves by SHEAR * y)


def affine_and_elastic(images, angles, zooms=None, shifts=None, pixels=ELASTIC_PIXELS):
    """Step 3's affine warp and, in the same resampling, an elastic one: every pixel also
    moves by a smooth random field, uniform random displacements on a 4x4 grid of
    control points, interpolated (bicubic) to every pixel."""
    n, size = len(images), images.shape[-1]
    field = torch.rand(n, 2, ELASTIC_POINTS, ELASTIC_POINTS) * 2 - 1  # CPU draws, any device
    field = F.interpolate(field, size=(size, size), mode="bicubic", align_corners=True)
    return common.affine(images, angles, zooms, shifts, displacement=field.permute(0, 2, 3, 1) * pixels)


def affine_and_shear(images, angles, zooms=None, shifts=None, shear=SHEAR):
    """Step 3's affine warp and, in the same resampling, a random horizontal shear about
    the centre (the slant of handwriting): x moves by s * (y - centre), s uniform in
    [-shear, shear] per image."""
    n, size = len(images), images.shape[-1]
    slopes = (torch.rand(n) * 2 - 1) * shear  # CPU draws, any device
    rows = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    displacement = torch.zeros(n, size, size, 2)
    displacement[..., 0] = slopes[:, None, None] * rows[None, :, None]
    return common.affine(images, angles, zooms, shifts, displacement=displacement)


def plain_last_third(epoch, epochs):
    """Step 3's augmentation, none in the last third of the epochs."""
    return None if epoch > epochs - round(epochs / 3) else dict(step3.AUGMENTATION)


AVERAGE_DECAY = 0.999  # the moving average's weight on its past, per step: about 2 epochs
AVERAGES = weakref.WeakKeyDictionary()  # model -> its moving average, for evaluate_average


def make_optimizer_with_average(model, args, steps_per_epoch, decay=AVERAGE_DECAY):
    """Step 3's optimiser, its rate's floor at 10% of the peak; after every step an exponential
    moving average of the weights and BatchNorm statistics is updated, kept beside the model
    (not one of its modules: it must not count as parameters), which the test pass reads."""
    optimizer, scheduler = step3.make_optimizer(model, args, steps_per_epoch, rate_floor=0.1)
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
                   "average), not after it (5 -> 3, RF 32)", net=layout(last_after_pool=False))
VARIANTS = {
    "step3": STEP3,
    "conv-before-pool": BEFORE,
    "plain-last-third": BEFORE.but("conv-before-pool, and no augmentation in the last third of the epochs "
                                   "(11-15 of 15): the model ends on the digits as they are written",
                                   augmentation=plain_last_third, paired_with="conv-before-pool"),
    "average-floor-10": BEFORE.but("conv-before-pool, the rate's floor at 10% of its peak (step 3: 1%), and the "
                                   "test reads a moving average of the weights and BatchNorm statistics (decay "
                                   f"{AVERAGE_DECAY} per step)", make_optimizer=make_optimizer_with_average,
                                   test=evaluate_average, paired_with="conv-before-pool"),
    "blur-second-only": BEFORE.but("conv-before-pool, and a plain max-pool after block 1, the anti-aliased one only "
                                   "after block 2 (the first pool's blur is most of its time)",
                                   net=layout(last_after_pool=False, first_pool=lambda: nn.MaxPool2d(2)),
                                   paired_with="conv-before-pool"),
    "no-dropout": STEP3.but("no dropout (step 3: 0.05 after every ReLU)", net=layout(conv=conv_bn_with())),
    "nn-dropout": STEP3.but("torch's nn.Dropout, one random number an element, instead of step 3's Dropout (on a "
                            "CPU four to a random number): the same masks in distribution; step 3 as it was",
                            net=layout(conv=conv_bn_with(dropout=nn.Dropout))),
    "dropout-small-maps": STEP3.but(f"dropout only after the 3 convolutions that follow the first pool, none at "
                                    "28x28 (where most of its random masks are)",
                                    net=layout(conv_28=conv_bn_with())),
    "dropout2d": STEP3.but(f"Dropout2d {DROPOUT} (whole maps) instead of Dropout",
                           net=layout(conv=conv_bn_with(dropout=nn.Dropout2d))),
    "dropout-after-pool": STEP3.but(f"no dropout at 28x28, one ({DROPOUT}) after the first pool instead",
                                    net=layout(conv_28=conv_bn_with(), dropout_after_pool=True)),
    "silu": STEP3.but("SiLU instead of ReLU", net=layout(conv=conv_bn_with(activation=nn.SiLU, dropout=step3.Dropout))),
    "mild-augmentation": STEP3.but("7 degrees, 5% zoom, 1 pixel shift (step 3: 10, 10%, 2)",
                                   augmentation=dict(degrees=7.0, zoom=0.05, shift=1.0)),
    "elastic": STEP3.but(f"step 3's augmentation and an elastic warp of up to {ELASTIC_PIXELS:g} pixels",
                         warp=affine_and_elastic),
    "shear": STEP3.but(f"step 3's augmentation and a random slant (horizontal shear up to {SHEAR:g})",
                       warp=affine_and_shear),
    "weight-decay-5e-4": STEP3.but("weight decay 5e-4 instead of 1e-4",
                                   make_optimizer=partial(step3.make_optimizer, weight_decay=5e-4)),
    "anneal-90": STEP3.but("the cosine reaches its floor at 90% of the steps (step 3: 75%)",
                           make_optimizer=partial(step3.make_optimizer, anneal_end=0.9)),
    "wide-28x28": STEP3.but("1 -> 10 -> 10 -> 12 at 28x28, middle 12 -> 14 -> 14 -> 16",
                            net=layout((10, 10, 12), (14, 14, 16))),
    "max-pool": STEP3.but("plain 2x2 max-pools instead of anti-aliased ones", net=layout(pool=lambda: nn.MaxPool2d(2))),
    "squeeze-excite": STEP3.but("a squeeze-and-excitation gate after each block (235 parameters)",
                                net=layout(squeeze_excite=True)),
    "wide-end": STEP3.but("middle 12 -> 12 -> 16 -> 20: 20 channels into the average (step 3: 16)",
                          net=layout(block2=(12, 16, 20))),
    "wide-end-short-warmup": STEP3.but("wide-end, and the warm-up over 5% of the steps (step 3: 20%)",
                                       net=layout(block2=(12, 16, 20)),
                                       make_optimizer=partial(step3.make_optimizer, warmup_end=0.05)),
}
FRONTIER = (0.45, 0.55, 0.7, 0.85)  # with step 3 (x1): about 1,600 to 7,700 parameters
for factor in FRONTIER:
    widths = scaled(factor)
    VARIANTS[f"widths-x{factor:g}"] = STEP3.but(
        f"every width x{factor:g}: 1 -> {' -> '.join(map(str, widths['block1']))} at 28x28, then "
        f"{' -> '.join(map(str, widths['block2']))} (the frontier of sizes)", net=layout(**widths))
# Designed for their size; EXPERIMENTS.md shows them beside the frontier.
SMALL_DESIGNS = ("separable-3.9k", "separable-3.9k-no-dropout", "separable-3.9k-mild-augmentation")
SEPARABLE = VARIANTS["separable-3.9k"] = STEP3.but(
    "under 4,000 parameters by design: step 3's 28x28 block, then depthwise-separable convolutions "
    "12 -> 20 -> 24 -> 28 (each a 3x3 per channel and a 1x1 across)",
    net=layout(block2=(20, 24, 28), conv=separable_conv_bn, conv_28=step3.conv_bn), paired_with="widths-x0.7")
# A small network fits its training digits less well (it ends below its test accuracy): less regularisation.
VARIANTS["separable-3.9k-no-dropout"] = SEPARABLE.but(
    "separable-3.9k without dropout (half the network's size leaves less to regularise; its masks also cost "
    "CPU time)", net=layout(block2=(20, 24, 28), conv=partial(separable_conv_bn, dropout=0), conv_28=conv_bn_with()),
    paired_with="separable-3.9k")
VARIANTS["separable-3.9k-mild-augmentation"] = SEPARABLE.but(
    "separable-3.9k with milder augmentation, as mild-augmentation (up to 7°, 5% zoom, 1 px)",
    augmentation=dict(VARIANTS["mild-augmentation"].augmentation), paired_with="separable-3.9k")


def train_seeds(name, seeds, args, out):
    """Train variant `name` once per seed in this process."""
    recipe = VARIANTS[name]
    device = common.pick_device(args.device)
    data = common.load_mnist(args.data_dir, device, args.subset)
    for seed in seeds:
        print(f"--- seed {seed}", flush=True)
        common.train_one_seed(STEP, recipe.net, recipe.make_optimizer, args, data, device, seed,
                              out / "seeds" / f"{STEP}_seed{seed}.json", recipe.augmentation, name,
                              recipe.warp, recipe.test)


def write_variants_json(path):
    """What report.py needs of the variants (so that it need not import this file): what each
    changes, what it is paired with, and the group of the frontier's figure it belongs to."""
    groups = {"step3": "frontier", **{f"widths-x{f:g}": "frontier" for f in FRONTIER},
              **dict.fromkeys(SMALL_DESIGNS, "design")}
    common.write_atomically(path, json.dumps({name: dict(what=r.what, paired_with=r.paired_with,
                                                         **({"group": groups[name]} if name in groups else {}))
                                              for name, r in VARIANTS.items()}, indent=1) + "\n")


def train_side_by_side(variant, seeds, jobs, step_argv, out):
    """One process per seed, `jobs` at a time, one thread each; output in <out>/seeds/*.log."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    waiting, running = list(seeds), {}
    while waiting or running:
        while waiting and len(running) < jobs:
            seed = waiting.pop(0)
            log = out / "seeds" / f"{STEP}_seed{seed}.log"
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
                                       f"{out / 'seeds' / f'{STEP}_seed{seed}.log'}")
            record = report.read_runs([out / "seeds" / f"{STEP}_seed{seed}.json"])[0]
            print(f"seed {seed}: final test accuracy {record['epochs'][-1]['test_acc']:.2f}%", flush=True)


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
    parser.add_argument("--out", help="folder for the JSONs and seeds.md (default results/experiments/VARIANT)")
    known, step_argv = parser.parse_known_args(argv)
    if known.variants_json:
        return write_variants_json(known.variants_json)
    if known.list or known.variant is None:
        width = max(map(len, VARIANTS))
        print("\n".join(f"{name:{width}}  {recipe.what}" for name, recipe in VARIANTS.items()))
        return
    if not known.seeds:
        parser.error("--seeds is required, e.g. --seeds 1,2,3")
    out = common.prepare_out_dir(Path(known.out or f"results/experiments/{known.variant}"))
    (out / "seeds").mkdir(exist_ok=True)
    args = common.parse_args(step3.__doc__, step3.SETTINGS, step_argv)  # step 3's options, checked
    print(f"variant {known.variant}: {VARIANTS[known.variant].what}", flush=True)
    if known.jobs > 1 and len(known.seeds) > 1:
        train_side_by_side(known.variant, known.seeds, known.jobs, step_argv, out)
    else:
        train_seeds(known.variant, known.seeds, args, out)
    runs = report.read_runs([out / "seeds" / f"{STEP}_seed{seed}.json" for seed in known.seeds])
    print(report.write_seeds_md(out / "seeds.md", runs))


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
