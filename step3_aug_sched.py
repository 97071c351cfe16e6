"""Step 3: augmentation, a learning-rate schedule and anti-aliased pools hold 99.4% with
< 8,000 parameters.

Target
    At least 99.4% test accuracy in each of the last 5 of 15 epochs, on any seed, and a
    mean final accuracy of 99.5%, with fewer than 8,000 parameters. Step 2 stalled at
    99.3% with a jumpy test curve, so:
    - a schedule: the rate warms up to --lr over the first 20% of the steps, falls along
      a cosine to 1% of it by 75%, and stays there, so the last epochs settle;
    - augmentation: each training image gets its own random rotation (up to 10 degrees),
      zoom (up to 10%) and shift (up to 2 pixels), done for the whole batch at once on
      the device; step 2's light dropout (5%) stays;
    - the parameters move to where the digit is still large: block 1 is padded and runs
      three convolutions at 28x28 (a 7x7 view of strokes and bends before the first
      pool), the middle block has three convolutions taking 14x14 to 8x8 (step 2: two,
      12x12 to 8x8), and no 3x3 layer is left on the 4x4 map;
    - anti-aliased pools: each 2x2 max-pool takes the max at stride 1, then a fixed 3x3
      blur at stride 2, so that a digit shifted by a pixel (as the augmentation does)
      gives nearly the same features instead of whichever pixel survives the pool.

Result (`make all`, seed 1, CPU; results/step3_aug_sched.json)
    7,662 parameters, 1.75 M multiply-adds per image in the convolutions (the blur adds
    about 23 k), receptive field 40 px (28 before the global average). Best train
    accuracy 99.22%, best test accuracy 99.50% (epoch 10), final 99.41%, at or above 99.4%
    from epoch 9 on. About 23 s of training per epoch (two threads), 6.3 minutes for the
    step; `make all` took 11 min 43 s.
    Over seeds 1-5 (results/seeds.md): final accuracy 99.53% +- 0.06 (99.45, 99.55,
    99.59, 99.58, 99.47); every seed stays at or above 99.4% from epoch 7 or 8 on, the
    worst of the last 5 epochs is 99.45%: 5 of 5 pass. These runs used one thread each,
    two side by side (OMP_NUM_THREADS=1 tools/ablations.py, identical code, gathered by
    `common.py seeds`); `OMP_NUM_THREADS=1 make seeds` gives the same numbers.
    Over seeds 11-15, which no choice here was based on (same way): final accuracy
    99.47% +- 0.04 (99.42, 99.51, 99.48, 99.49, 99.45), 5 of 5 passing, worst 99.42%.
    All ten seeds: mean 99.50%, 10 of 10 passing.

Analysis
    On target over seeds 1-5, and every one of the ten seeds run holds 99.4% in each of
    its last 5 epochs (from epoch 7 or 8 on for seeds 1-5, the stretch goal). The mean is
    the thin part: 99.53% on seeds 1-5 but 99.47% on seeds 11-15, so over other seeds it
    will land near 99.5%, on either side. The schedule does its job: once the rate is at
    its floor (epoch 12) every seed moves by less than 0.1 point per epoch, so each seed's
    level is set by where its run lands, not by which epoch one stops at.
    What the anti-aliased pools bought: with plain max-pools (the previous version, commit
    4ba6796; `tools/ablations.py max-pool`) `make seeds` gave 99.37, 99.48, 99.45, 99.46,
    99.53 (mean 99.46%, 4 of 5 passing, worst 99.36%), and seeds 11-15 99.50, 99.49,
    99.44, 99.38, 99.43 (mean 99.45%, 4 of 5): +0.07 point on seeds 1-5 (+0.08, +0.07,
    +0.14, +0.12, -0.06; those were two-thread runs, so the pairs are not run-for-run),
    +0.02 on seeds 11-15 (-0.08, +0.02, +0.04, +0.11, +0.02), and the runs that failed
    (seed 1: 99.36-99.39%, seed 14: 99.38%) now pass. The blur adds no parameters and
    about 23 k multiply-adds, but on a CPU about a fifth more time per epoch, nearly all
    of it at the first pool (a max at stride 1 on the 28x28 map): 33-34 s against 27-28 s
    per epoch at one thread, side by side. The previous version's `make all` (13 min 45 s,
    7.2 minutes for this step) ran in an earlier session on a machine that was slower at
    every step (steps 1 and 2: 2.5 and 3.5 minutes then, 2.2 and 2.8 now), so only the
    side-by-side figures compare the two.
    What the layout bought, from two `make seeds` tables (same seeds, same machine): the
    version before it (commit b2961dc: two padded convolutions at 28x28, 12 -> 16 -> 16
    -> 16 in the middle, no dropout; 7,578 parameters, 1.36 M multiply-adds) ended at
    99.46, 99.35, 99.37, 99.44, 99.35 (mean 99.39%, 2 of 5 seeds passing, worst 99.27%);
    the layout above, with plain max-pools, at the 99.46% mean given above.
    Time: this is the slowest step. The third 28x28 convolution adds 0.45 M multiply-adds
    (1.75 M in all, against 1.36 M). Dropout is free in multiply-adds but not on a CPU: at
    28x28 it costs about a fifth of the epoch (dropout-after-pool below), as drawing its
    masks costs about as much as these narrow convolutions.
    What did not help. Each line is the previous version (plain max-pools) with one
    change, rerun at commit 4ba6796 by `python tools/ablations.py VARIANT --seeds ...`
    (one thread per run, OMP_NUM_THREADS=1, as these were; times per epoch are with 2
    threads, as in `make all`). Final test accuracy on seeds 11-15; that version, run
    the same way: 99.50, 99.49, 99.44, 99.38, 99.43 (4 of 5 pass, mean 99.45%).
        no-dropout          11-13: 99.43, 99.37, 99.50
        dropout-0.1         11: 99.33
        dropout2d           11: 99.31 (train accuracy 97.7%: dropping whole maps of an
                            8-12 channel layer is too strong)
        dropout-after-pool  11, 12, 14, 15: 99.39, 99.45, 99.37, 99.39, lower on all four,
                            though 18 s per epoch against 22-24 s: the dropout at 28x28
                            costs a fifth of the step's time and earns it
        wide-28x28          11-13: 99.45, 99.43, 99.38, lower on all three, and 30.5 s per
                            epoch against 22-24 s (7,684 parameters, 2.15 M multiply-adds)
        mild-augmentation   11: 99.39
        shear               11-15: 99.54, 99.41, 99.49, 99.50, 99.31: mean 99.45%, 3 of
                            5 passing; paired with that version +0.04, -0.08, +0.05,
                            +0.12, -0.12 (a random slant, the main way handwriting varies:
                            a horizontal shear of up to 0.15 on top of the warp above)
        elastic             14: 99.28 (up to 2 pixels on top of step 3's warp; train
                            accuracy 98.2% against 99.1%: more than this network can fit
                            in 15 epochs)
        silu                11-15: 99.41, 99.42, 99.47, 99.47, 99.40: mean 99.43%, 3 of
                            5 passing
        last-conv-after-pool
                            11-15: 99.43, 99.41, 99.46, 99.51, 99.57 (mean 99.48%, 5 of 5
                            passing); then seeds 1-5, to check: 99.52, 99.41, 99.39, 99.40,
                            99.54 (mean 99.45%, 3 of 5; that version's `make seeds`: 99.46%,
                            4 of 5). Over the ten seeds, +0.01 point: noise (the last 3x3
                            convolution after the second pool, on 5x5 -> 3x3; same
                            parameters, 7% fewer multiply-adds)
        wide-end            11, 12: 99.44, 99.43 (middle 12 -> 12 -> 16 -> 20: 20
                            channels into the average instead of 16; 7,778 parameters)
        wide-end-short-warmup
                            11: 99.40 (and the warm-up over 5% of the steps, not 20%)
        squeeze-excite      11: 99.35 (a squeeze-and-excitation gate after each block;
                            7,897 parameters; final test loss 0.0206 against 0.0158)
        anneal-90           11, 12: 99.44, 99.47, both under 99.4% at epoch 11 (rate still
                            0.026)
        step3 --lr 0.2      11: 99.42;  --lr 0.05: 99.41
        step3 --batch-size 64 --lr 0.05 (twice the steps)
                            11-15: 99.51, 99.42, 99.52, 99.44, 99.39: mean 99.46%, 3 of 5
                            passing, about 10% more time per epoch
    Two changes to this step itself (anti-aliased pools), run the same way on seeds 11-15
    against its 99.42, 99.51, 99.48, 99.49, 99.45 (mean 99.47%, 5 of 5 passing):
        blur-second-only    99.42, 99.46, 99.49, 99.48, 99.48: mean 99.47%, 5 of 5 passing,
                            worst 99.42% (paired: 0, -0.05, +0.01, -0.01, +0.03), in 28-30 s
                            per epoch against 33-34 s (one thread, side by side): the same
                            accuracy on these seeds for a sixth less time
        weight-decay-5e-4   99.42, 99.46, 99.51, 99.50, 99.47: mean 99.47%, 4 of 5 passing
                            (seed 12 at 99.39% in epoch 11): no gain
    Also tried in one-off development runs whose code is not kept, none doing better:
    label smoothing 0.1, BatchNorm statistics recomputed on plain images before each test,
    the last 5 epochs on plain (un-augmented) images, and a moving average of the weights
    (with the rate at 1% of its peak for the last four epochs the weights hardly move, so
    there is little to average).
    Next: the margin is small. Both targets hold on seeds 1-5 and every seed tried passes,
    but the seed-to-seed spread (0.06 point) is the size of the test set's own sampling
    error (0.07 point at 99.5% on 10,000 images), and the mean over seeds 11-15 is 99.47%,
    so a new set of five seeds will sometimes average a few hundredths under 99.5%. A
    larger margin needs a change worth another 0.05 point or more: every other change
    above moved the mean by less or lowered it (the dropout sits at its best level, since
    both more and less of it lower accuracy, and five times the weight decay changes
    nothing; a new kind of augmentation, a slant, and channel gates or a wider last layer
    do not help) and the parameters cannot grow. The time saving to take next: the blur at the second pool only, which matched
    this step on seeds 11-15 for a sixth less time per epoch (above); before adopting it,
    run it on seeds 1-5 too, then `make all` and `make seeds` for the new numbers.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import main_guard, parse_args, run_step

SETTINGS = dict(epochs=15, batch_size=128, lr=0.1)
AUGMENTATION = dict(degrees=10.0, zoom=0.1, shift=2.0)  # per image: up to 10°, 10% zoom, 2 px shift
DROPOUT = 0.05
WEIGHT_DECAY = 1e-4
WARMUP_END = 0.2  # share of the steps spent raising the rate to its peak
ANNEAL_END = 0.75  # share of the steps after which the rate stays at its floor


def conv_bn(in_channels, out_channels, padding=0):
    """3x3 convolution -> BatchNorm -> ReLU -> dropout (no conv bias: BatchNorm has one)."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=padding, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(), nn.Dropout(DROPOUT))


class BinomialBlur(nn.AvgPool2d):
    """A fixed 3x3 blur ([1, 2, 1] x [1, 2, 1] / 16) at stride 2, per channel, no parameters; an
    AvgPool2d by type, so that the model summary counts its receptive field."""
    def __init__(self):
        super().__init__(3, stride=2, padding=1)
        binomial = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("weight", (binomial[:, None] * binomial[None, :] / 16)[None, None])

    def forward(self, x):
        channels = x.shape[1]
        return F.conv2d(x, self.weight.expand(channels, 1, 3, 3), stride=2, padding=1, groups=channels)


def pool():
    """Anti-aliased max-pool (Zhang, 2019): the max over 2x2 at stride 1, then the blur at stride
    2, so that a digit shifted by a pixel gives nearly the same output, not whichever pixel of
    four a plain max-pool happens to keep."""
    return nn.Sequential(nn.MaxPool2d(2, stride=1), BinomialBlur())


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        # Three padded convolutions at 28x28 see 7x7 pixels (strokes and their bends) before the
        # first pool; the middle block then works at 14 -> 8 (step 2: 12 -> 8).
        self.block1 = nn.Sequential(conv_bn(1, 8, padding=1), conv_bn(8, 8, padding=1),
                                    conv_bn(8, 12, padding=1))  # 28, RF 7
        self.transition1 = pool()  # -> 14, RF 10
        self.block2 = nn.Sequential(conv_bn(12, 14), conv_bn(14, 16), conv_bn(16, 16))  # -> 8, RF 22
        self.transition2 = pool()  # -> 4, RF 28
        # Average over the 4x4 map (RF 28 + 3 * 4 = 40), then a 1x1 convolution to 10 classes.
        self.output = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, 10, 1), nn.Flatten())

    def forward(self, x):
        x = self.transition1(self.block1(x))
        return self.output(self.transition2(self.block2(x)))


def make_optimizer(model, args, steps_per_epoch):
    """SGD with Nesterov momentum; the rate rises from 4% to 100% of --lr until WARMUP_END of the
    steps, falls along a cosine to 1% at ANNEAL_END and stays there, so the last epochs settle."""
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True,
                                weight_decay=WEIGHT_DECAY)
    total_steps = args.epochs * steps_per_epoch

    def rate_factor(step):
        progress = step / total_steps
        if progress < WARMUP_END:
            return 0.04 + 0.96 * progress / WARMUP_END
        anneal = min(1.0, (progress - WARMUP_END) / (ANNEAL_END - WARMUP_END))
        return 0.01 + 0.99 * (1 + math.cos(math.pi * anneal)) / 2

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, rate_factor)


def main(argv=None):
    run_step("step3_aug_sched", Net, make_optimizer, parse_args(__doc__, SETTINGS, argv), AUGMENTATION)


if __name__ == "__main__":
    main_guard(main)
