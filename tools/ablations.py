"""Step 3 on several seeds, as it is or with one thing changed, and its seeds table.

    python tools/ablations.py --list                                  # the variants
    python tools/ablations.py step3 --seeds 1,2,3,4,5 --jobs 2        # make seeds
    python tools/ablations.py silu --seeds 21,22,23 --jobs 2          # -> results/experiments/silu/

Each seed writes <out>/seeds/step3_aug_sched_seed<N>.json; then <out>/seeds.md is built
from them (tools/report.py). With --jobs N, N seeds train side by side, each in its own
process with one thread (one core each); a seed run with one thread gives the same numbers
alone or beside others, while another thread count changes its last digits. Every other
option is step 3's own (`python step3_aug_sched.py --help`), so changes of batch size or
rate need no variant. `make experiments` gathers every variant into EXPERIMENTS.md.
"""
import argparse
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402
import report  # noqa: E402
import step3_aug_sched as step3  # noqa: E402

STEP = "step3_aug_sched"


DROPOUT = 0.05  # the dropout of the variants that have one (step 3 had it after every ReLU)


def conv_bn_with(activation=nn.ReLU, dropout=None):
    """step3.conv_bn with another activation, and a dropout layer (a class) after it."""
    def conv_bn(in_channels, out_channels, padding=0):
        layers = [nn.Conv2d(in_channels, out_channels, 3, padding=padding, bias=False),
                  nn.BatchNorm2d(out_channels), activation()]
        return nn.Sequential(*layers, *([dropout(DROPOUT)] if dropout else []))
    return conv_bn


def layout(block1, block2, dropout=None, block1_dropout=True, dropout_after_pool=False, last_after_pool=True):
    """Step 3's layout with other widths: `block1` = channels of the three padded 28x28
    convolutions, `block2` = those of the three unpadded ones after the first pool, the last
    of them after the second pool (14 -> 10, pool, 5 -> 3); with `last_after_pool=False`
    before it (14 -> 8, pool to 4x4), as step 3 had it before (BEFORE). `dropout`: a dropout
    class after every ReLU (in block 1 only with `block1_dropout`)."""
    class Net(step3.Net):
        def __init__(self):
            nn.Module.__init__(self)  # not step3.Net's: its layers would use up random draws
            conv = conv_bn_with(dropout=dropout)
            conv_28 = conv if block1_dropout else conv_bn_with()
            a, b, c = block1
            self.block1 = nn.Sequential(conv_28(1, a, 1), conv_28(a, b, 1), conv_28(b, c, 1))
            self.transition1 = nn.Sequential(step3.pool(), *([nn.Dropout(DROPOUT)]
                                                             if dropout_after_pool else []))
            d, e, f = block2
            middle = [conv(c, d), conv(d, e), conv(e, f)]
            self.block2 = nn.Sequential(*middle[:2 if last_after_pool else 3])
            self.transition2 = nn.Sequential(step3.pool(), *(middle[2:] if last_after_pool else []))
            self.output = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(f, 10, 1), nn.Flatten())

        def forward(self, x):
            return self.output(self.transition2(self.block2(self.transition1(self.block1(x)))))
    return Net


def with_plain_first_pool(net_class):
    """`net_class` with a plain 2x2 max-pool after block 1 (the second pool stays)."""
    class Net(net_class):
        def __init__(self):
            super().__init__()
            self.transition1 = nn.MaxPool2d(2)
    return Net


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


def with_squeeze_excite(net_class):
    """`net_class` with a squeeze-and-excitation gate at the end of both blocks."""
    class Net(net_class):
        def __init__(self):
            super().__init__()
            self.block1.append(SqueezeExcite(self.block1[-1][0].out_channels))
            self.block2.append(SqueezeExcite(self.block2[-1][0].out_channels))
    return Net


step3_affine = common.affine
ELASTIC_PIXELS = 2.0  # largest displacement of the elastic variant's random field
ELASTIC_POINTS = 4  # its control points per side: smooth over about 9 pixels


def affine_and_elastic(images, angles, zooms=None, shifts=None):
    """Step 3's affine warp and, in the same resampling, an elastic one: every pixel also
    moves by a smooth random field, uniform random displacements on a 4x4 grid of
    control points, interpolated (bicubic) to every pixel."""
    n, size = len(images), images.shape[-1]
    field = torch.rand(n, 2, ELASTIC_POINTS, ELASTIC_POINTS) * 2 - 1  # CPU draws, any device
    field = F.interpolate(field, size=(size, size), mode="bicubic", align_corners=True)
    displacement = field.permute(0, 2, 3, 1) * ELASTIC_PIXELS
    return step3_affine(images, angles, zooms, shifts, displacement=displacement)


SHEAR = 0.15  # largest horizontal shear of the shear variant (x moves by SHEAR * y)


def affine_and_shear(images, angles, zooms=None, shifts=None):
    """Step 3's affine warp and, in the same resampling, a random horizontal shear about
    the centre (the slant of handwriting): x moves by s * (y - centre), s uniform in
    [-SHEAR, SHEAR] per image."""
    n, size = len(images), images.shape[-1]
    slopes = (torch.rand(n) * 2 - 1) * SHEAR  # CPU draws, any device
    rows = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    displacement = torch.zeros(n, size, size, 2)
    displacement[..., 0] = slopes[:, None, None] * rows[None, :, None]
    return step3_affine(images, angles, zooms, shifts, displacement=displacement)


step3_make_optimizer, step3_evaluate, step3_train_epoch = step3.make_optimizer, common.evaluate, common.train_epoch


def make_optimizer_noting_length(model, args, steps_per_epoch):
    """Step 3's optimiser and schedule, the run's length noted on the schedule for
    train_epoch_plain_last_third."""
    optimizer, scheduler = step3_make_optimizer(model, args, steps_per_epoch)
    scheduler.epochs, scheduler.steps_per_epoch = args.epochs, steps_per_epoch
    return optimizer, scheduler


def train_epoch_plain_last_third(model, optimizer, scheduler, images, labels, batch_size, generator,
                                 augmentation=None, **options):
    """common.train_epoch, without augmentation in the last third of the run's epochs."""
    epoch = scheduler.last_epoch // scheduler.steps_per_epoch + 1  # the scheduler steps once per batch
    if epoch > scheduler.epochs - round(scheduler.epochs / 3):
        augmentation = None
    return step3_train_epoch(model, optimizer, scheduler, images, labels, batch_size, generator,
                             augmentation, **options)


AVERAGE_DECAY = 0.999  # the moving average's weight on its past, per step: about 2 epochs


def make_optimizer_with_average(model, args, steps_per_epoch):
    """Step 3's optimiser and schedule; after every step an exponential moving average of the
    weights and BatchNorm statistics is updated, kept beside the model (not as one of its
    modules: it must not count as parameters), and the test reads it (evaluate_average)."""
    optimizer, scheduler = step3_make_optimizer(model, args, steps_per_epoch)
    average = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(AVERAGE_DECAY), use_buffers=True)
    model.__dict__["average"] = average
    optimizer.register_step_post_hook(lambda *_: average.update_parameters(model))
    return optimizer, scheduler


def evaluate_average(model, images, labels, batch_size=2000):
    """common.evaluate on the model's moving average where it has one."""
    average = model.__dict__.get("average")
    return step3_evaluate(average.module if average else model, images, labels, batch_size)


# Step 3 as it was before its last 3x3 convolution moved after the second pool: the variants
# that were run on that version are defined on it, and paired with it.
NET_BEFORE = layout((8, 8, 12), (14, 16, 16), dropout=nn.Dropout, last_after_pool=False)
BEFORE = [(step3, "Net", NET_BEFORE)]

# name: (what changes, [(module, attribute, new value), ...][, the variant it is paired with: step3])
VARIANTS = {
    "step3": ("step 3 unchanged", []),
    "conv-before-pool": ("the last 3x3 convolution before the second pool (14 -> 8, pooled to 4x4, "
                         "RF 28 before the average), not after it (5 -> 3, RF 32)", BEFORE),
    "dropout-0.05": (f"dropout {DROPOUT} after every ReLU (step 3: none)",
                     [(step3, "conv_bn", conv_bn_with(dropout=nn.Dropout))]),
    "dropout2d": (f"Dropout2d {DROPOUT} (whole maps) after every ReLU",
                  [(step3, "conv_bn", conv_bn_with(dropout=nn.Dropout2d))]),
    "silu": ("SiLU instead of ReLU", [(step3, "conv_bn", conv_bn_with(activation=nn.SiLU))]),
    "mild-augmentation": ("7 degrees, 5% zoom, 1 pixel shift (step 3: 10, 10%, 2)",
                          [(step3, "AUGMENTATION", dict(degrees=7.0, zoom=0.05, shift=1.0))]),
    "plain-last-third": ("conv-before-pool, and no augmentation in the last third of the epochs "
                         "(11-15 of 15): the model ends on the digits as they are written",
                         BEFORE + [(step3, "make_optimizer", make_optimizer_noting_length),
                                   (common, "train_epoch", train_epoch_plain_last_third)], "conv-before-pool"),
    "average-floor-10": ("conv-before-pool, the rate's floor at 10% of its peak (step 3: 1%), and the "
                         "test reads a moving average of the weights and BatchNorm statistics (decay "
                         f"{AVERAGE_DECAY} per step)",
                         BEFORE + [(step3, "RATE_FLOOR", 0.1), (step3, "make_optimizer", make_optimizer_with_average),
                                   (common, "evaluate", evaluate_average)], "conv-before-pool"),
    "elastic": (f"step 3's augmentation and an elastic warp of up to {ELASTIC_PIXELS:g} pixels",
                [(common, "affine", affine_and_elastic)]),
    "shear": (f"step 3's augmentation and a random slant (horizontal shear up to {SHEAR:g})",
              [(common, "affine", affine_and_shear)]),
    "weight-decay-5e-4": ("weight decay 5e-4 instead of 1e-4",
                          [(step3, "WEIGHT_DECAY", 5e-4)]),
    "anneal-90": ("the cosine reaches its floor at 90% of the steps (step 3: 75%)",
                  [(step3, "ANNEAL_END", 0.9)]),
    "wide-28x28": ("1 -> 10 -> 10 -> 12 at 28x28, middle 12 -> 14 -> 14 -> 16",
                   [(step3, "Net", layout((10, 10, 12), (14, 14, 16)))]),
    "dropout-after-pool": (f"one dropout ({DROPOUT}) after the first pool",
                           [(step3, "Net", layout((8, 8, 12), (14, 16, 16), dropout_after_pool=True))]),
    "max-pool": ("plain 2x2 max-pools instead of anti-aliased ones",
                 [(step3, "pool", lambda: nn.MaxPool2d(2))]),
    "blur-second-only": ("conv-before-pool, and a plain max-pool after block 1, the anti-aliased "
                         "one only after block 2 (the first pool's blur is most of its time)",
                         [(step3, "Net", with_plain_first_pool(NET_BEFORE))], "conv-before-pool"),
    "squeeze-excite": ("a squeeze-and-excitation gate after each block (235 parameters)",
                       [(step3, "Net", with_squeeze_excite(step3.Net))]),
    "wide-end": ("middle 12 -> 12 -> 16 -> 20: 20 channels into the average (step 3: 16)",
                 [(step3, "Net", layout((8, 8, 12), (12, 16, 20)))]),
    "wide-end-short-warmup": ("wide-end, and the warm-up over 5% of the steps (step 3: 20%)",
                              [(step3, "Net", layout((8, 8, 12), (12, 16, 20))),
                               (step3, "WARMUP_END", 0.05)]),
}


def apply(name, set_attribute=setattr):
    """Make step 3 into variant `name` (for this process: run one variant per process;
    tests pass monkeypatch.setattr, which undoes it)."""
    for module, attribute, value in VARIANTS[name][1]:
        set_attribute(module, attribute, value)


@contextlib.contextmanager
def applied(name):
    """Step 3 as variant `name` inside the `with` block, as it was again after it."""
    saved = [(module, attribute, getattr(module, attribute)) for module, attribute, _ in VARIANTS[name][1]]
    apply(name)
    try:
        yield
    finally:
        for module, attribute, value in saved:
            setattr(module, attribute, value)


def train_seeds(variant, seeds, args, out):
    """Train step 3 (as `apply` left it) once per seed in this process."""
    device = common.pick_device(args.device)
    data = common.load_mnist(args.data_dir, device, args.subset)
    for seed in seeds:
        print(f"--- seed {seed}", flush=True)
        common.train_one_seed(STEP, step3.Net, step3.make_optimizer, args, data, device, seed,
                              out / "seeds" / f"{STEP}_seed{seed}.json", step3.AUGMENTATION, variant)


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
    parser.add_argument("--seeds", type=seed_list, help="the seeds to train, e.g. 1,2,3")
    parser.add_argument("--jobs", type=int, default=1,
                        help="seeds trained side by side, one process and one thread each")
    parser.add_argument("--out", help="folder for the JSONs and seeds.md (default results/experiments/VARIANT)")
    known, step_argv = parser.parse_known_args(argv)
    if known.list or known.variant is None:
        width = max(map(len, VARIANTS))
        print("\n".join(f"{name:{width}}  {what}" for name, (what, *_) in VARIANTS.items()))
        return
    if not known.seeds:
        parser.error("--seeds is required, e.g. --seeds 1,2,3")
    out = common.prepare_out_dir(Path(known.out or f"results/experiments/{known.variant}"))
    (out / "seeds").mkdir(exist_ok=True)
    args = common.parse_args(step3.__doc__, step3.SETTINGS, step_argv)  # step 3's options, checked
    print(f"variant {known.variant}: {VARIANTS[known.variant][0]}", flush=True)
    if known.jobs > 1 and len(known.seeds) > 1:
        train_side_by_side(known.variant, known.seeds, known.jobs, step_argv, out)
    else:
        apply(known.variant)
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
