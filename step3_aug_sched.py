"""Step 3: augmentation and a learning-rate schedule hold 99.4% with < 8,000 parameters.

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
      12x12 to 8x8), and no 3x3 layer is left on the 4x4 map.

Result (`make all`, seed 1, CPU; results/step3_aug_sched.json)
    7,662 parameters, 1.75 M multiply-adds per image, receptive field 34 px (22 before
    the global average). Best train accuracy 99.11%, best test accuracy 99.39% (epoch
    13), final 99.37%: seed 1 never reaches 99.4%. 26.5 s of training per epoch,
    7.2 minutes for the step.
    Over seeds 1-5 (`make seeds`, results/seeds.md): final accuracy 99.46% +- 0.06
    (99.37, 99.48, 99.45, 99.46, 99.53); seeds 2-5 stay at or above 99.4% in all of their
    last 5 epochs (from epoch 9 or 10 on); seed 1 stays at 99.36-99.39%, the worst value.
    Over seeds 6-10, a later check that no choice here was based on (`--seeds
    6,7,8,9,10 --out <folder>`, 37 minutes; not kept in results/): final accuracy
    99.44% +- 0.06 (99.49, 99.48, 99.37, 99.38, 99.46); seeds 6, 7 and 10 pass, seed 9
    stays at 99.36-99.39%, seed 8 holds 99.41-99.47% until it ends at 99.37%. All ten
    seeds: final accuracy 99.45% +- 0.06, 7 of 10 passing.

Analysis
    Close to the target, not on it: 4 of 5 seeds hold 99.4% from epoch 9 or 10 on, but seed
    1 ends 0.03 short, the worst value is 0.04 under 99.4%, and the mean final accuracy is
    0.04 short of 99.5%; seeds 6-10 say the same (3 of 5, mean 99.44%), so about one run in
    three ends a few hundredths under 99.4%. The schedule does its job: once the rate is at
    its floor (epoch 12) every seed moves by less than 0.1 point per epoch, so each seed's
    level is set by where its run lands, not by which epoch one stops at.
    What the changes bought, from the two `make seeds` tables (same seeds, same machine):
    the previous version of this step (two padded convolutions at 28x28, 12 -> 16 -> 16
    -> 16 in the middle, no dropout; 7,578 parameters, 1.36 M multiply-adds) ended at
    99.46, 99.35, 99.37, 99.44, 99.35 (mean 99.39%, 2 of 5 seeds passing, worst 99.27%).
    This version is better on seeds 2, 3, 4 and 5 and worse on seed 1. Development runs
    on seeds 11-13 (one thread per run, `OMP_NUM_THREADS=1 ... --seeds 11,12,13`):
    previous version 99.24 and 99.38 (seeds 11, 12); with the third 28x28 convolution
    but DROPOUT = 0, 99.43 / 99.37 / 99.50; this version 99.50 / 99.49 / 99.44. Milder
    augmentation (7 degrees, 5%, 1 pixel), weight decay 5e-4, a wider last layer (24
    maps) and BatchNorm statistics recomputed on plain images before each test did not
    move the previous layout beyond the seed-to-seed spread.
    Time: this is the slowest step, 26.5 s per epoch against step 2's 13.2 s in the same
    `make all`, for 2.5 times its 0.70 M multiply-adds per image. The third 28x28
    convolution adds 0.45 M multiply-adds (1.75 M in all, against 1.36 M), and dropout,
    free in multiply-adds, costs about half again on a CPU, where drawing its masks over
    the 28x28 maps costs more than these narrow convolutions (development runs, one
    thread: 23 s per epoch with DROPOUT = 0, 35 s with 0.05).
    Tried next, on held-out seeds 11 and 12 (one thread per run; final accuracy, against
    99.50 and 99.49 for this version), and not adopted, as none did better: Dropout2d in
    place of per-pixel dropout, 99.31 (dropping whole maps of 8-12 channel layers is too
    strong: train accuracy 97.7%), though it would have cost no time; dropout 0.1, 99.33;
    label smoothing 0.1, 99.33; milder augmentation (7 degrees, 5%, 1 pixel), 99.39; a peak
    rate of 0.2 or 0.05, 99.42 / 99.41; depthwise-separable convolutions after the first
    one of the middle block (12 -> 16, then 16 -> 32 -> 64: 7,162 parameters, no faster on
    this CPU), 99.40 / 99.43 after 14 of 15 epochs; the last 5 epochs on plain,
    un-augmented images (the test set's kind), at epochs 11 and 12 +0.07 and +0.06 point on
    seed 11 but -0.09 and -0.04 on seed 12, against the same run continued with
    augmentation; rechecked the same way on seeds 6-10 (each pair identical through epoch
    10), the last-5 average moved by -0.002 point.
    Why a seed or two decides little: the same seed with other dropout draws (these runs
    against the ones quoted above) lands up to 0.08 point apart at the same epoch, about
    the standard error of a 99.45% accuracy measured on 10,000 test images (0.07). Only
    Dropout2d, dropout 0.1 and label smoothing fell clearly below that spread; the others
    are inside it, and telling them apart takes the five-seed table: 35-40 minutes per
    candidate on this CPU.
    Tried later on seeds 11-15 (one thread per run; this version: 99.50, 99.49, 99.44,
    99.38, 99.43, i.e. 4 of 5 passing, seed 14 at 99.38-99.40), none adopted: more width at
    28x28 (1 -> 10 -> 10 -> 12, middle 12 -> 14 -> 14 -> 16; 7,684 parameters, 2.15 M
    multiply-adds), 99.45 / 99.43 / 99.38 on seeds 11-13, lower on all three, and 30.5 s
    per epoch against 22-24 s (one epoch timed twice each, 2 threads as in `make all`);
    block 1 without dropout, one dropout after the first pool instead, 99.39 / 99.45 /
    99.37 / 99.39 on seeds 11, 12, 14, 15, lower on all four, though 18 s per epoch: the
    dropout at 28x28 costs a fifth of the step's time and earns it; that and more width
    (1 -> 10 -> 10 -> 12 or 1 -> 12 -> 12 -> 12, 7,850 parameters), 99.37 and 99.43 on seed
    11; the cosine reaching its floor at 90% of the steps instead of 75%, 99.44 / 99.47 on
    seeds 11, 12, both under 99.4% at epoch 11 (rate still 0.026); an exponential moving
    average of the weights and BatchNorm statistics (decay 0.998 or 0.999), tested beside
    the plain weights in the same runs (the wider layout on seeds 11-13, this one on 14 and
    15), moved the last-5 average by -0.014 to +0.012 point: with the rate at 1% of its
    peak for the last four epochs the weights hardly move, so there is little to average;
    batch 64 at rate 0.05 (twice the steps), 99.51 / 99.42 / 99.52 / 99.44 / 99.39, mean
    99.46% against 99.45%, 3 of 5 passing against 4, about 10% more time per epoch.
    Next: at 7,662 parameters this layout sits at about 99.45%, with a seed-to-seed spread
    (0.06 point) the size of the test set's own sampling error, so about one seed in three
    ends a few hundredths under 99.4%. Every change tried at the same budget (width, depth,
    dropout kind, placement and rate, schedule, augmentation strength, label smoothing,
    weight averaging, batch size) moved it by less than that or made it worse. Meeting the
    target on every seed needs about 8 fewer test errors out of 55 (a true mean near
    99.53%), which these small changes do not give; what is left to try is a different kind
    of change, judged five seeds at a time, best on a GPU where that takes minutes.
"""
import math

import torch
import torch.nn as nn

from common import main_guard, parse_args, run_step

SETTINGS = dict(epochs=15, batch_size=128, lr=0.1)
# Each training image: rotated up to 10 degrees, zoomed by up to 10%, shifted up to 2 pixels.
AUGMENTATION = dict(degrees=10.0, zoom=0.1, shift=2.0)
DROPOUT = 0.05
WEIGHT_DECAY = 1e-4
WARMUP_END = 0.2  # share of the steps spent raising the rate to its peak
ANNEAL_END = 0.75  # share of the steps after which the rate stays at its floor


def conv_bn(in_channels, out_channels, padding=0):
    """3x3 convolution -> BatchNorm -> ReLU -> dropout (no conv bias: BatchNorm has one)."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=padding, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(), nn.Dropout(DROPOUT))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        # Three padded convolutions at 28x28 see 7x7 pixels (strokes and their bends)
        # before the first pool; the middle block then works at 14 -> 8 (step 2: 12 -> 8).
        self.block1 = nn.Sequential(conv_bn(1, 8, padding=1), conv_bn(8, 8, padding=1),
                                    conv_bn(8, 12, padding=1))  # 28, RF 7
        self.transition1 = nn.MaxPool2d(2)  # -> 14, RF 8
        self.block2 = nn.Sequential(conv_bn(12, 14), conv_bn(14, 16), conv_bn(16, 16))  # -> 8, RF 20
        self.transition2 = nn.MaxPool2d(2)  # -> 4, RF 22
        # Average over the 4x4 map (RF 22 + 3 * 4 = 34), then a 1x1 convolution to 10 classes.
        self.output = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, 10, 1), nn.Flatten())

    def forward(self, x):
        x = self.transition1(self.block1(x))
        x = self.transition2(self.block2(x))
        return self.output(x)


def make_optimizer(model, args, steps_per_epoch):
    """SGD with Nesterov momentum. The rate rises linearly from 4% to 100% of --lr over the
    first WARMUP_END of the steps, falls along a cosine to 1% at ANNEAL_END, and stays
    there, so that the last epochs settle instead of still moving."""
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
    args = parse_args(__doc__, SETTINGS, argv)
    run_step("step3_aug_sched", Net, make_optimizer, args, augmentation=AUGMENTATION)


if __name__ == "__main__":
    main_guard(main)
