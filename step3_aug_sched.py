"""Step 3: augmentation and a learning-rate schedule hold 99.4% with < 8,000 parameters.

Target
    At least 99.4% test accuracy in each of the last 5 of 15 epochs, on any seed, with
    fewer than 8,000 parameters. Step 2 stalled at 99.3% with a jumpy test curve, so:
    - a schedule: the rate warms up to --lr over the first 20% of the steps, falls along
      a cosine to 1% of it by 75%, and stays there, so the last epochs settle;
    - augmentation: each training image gets its own random rotation (up to 10 degrees),
      zoom (up to 10%) and shift (up to 2 pixels), done for the whole batch at once on
      the device; it is the regulariser here, so dropout goes (it also cost a third of
      every CPU epoch);
    - the parameters move to where the digit is still large: block 1 is padded and stays
      at 28x28, the middle block has three convolutions taking 14x14 to 8x8 (step 2:
      two, 12x12 to 8x8), and no 3x3 layer is left on the 4x4 map.

Result (`make all`, seed 1, CPU; results/step3_aug_sched.json)
    7,578 parameters, 1.36 M multiply-adds per image, receptive field 32 px (20 before
    the global average). Best train accuracy 99.33%, best test accuracy 99.48% (epoch
    13), final 99.46%; at or above 99.4% in epochs 9-15. 10.6 s of training per epoch,
    3.1 minutes for the step.
    Over seeds 1-5 (`make seeds`, results/seeds.md): final accuracy 99.39% +- 0.05
    (99.46, 99.35, 99.37, 99.44, 99.35); only seeds 1 and 4 stay at or above 99.4% in
    all of their last 5 epochs; the worst of those 25 values is 99.27%.

Analysis
    The schedule does its job: once the rate is at its floor (epoch 12) every seed's test
    accuracy moves by less than 0.1 point from epoch to epoch, and the test loss is the
    lowest of the three steps (0.017). The target is met on seed 1, the run above, but
    not on any seed: the mean final accuracy is 0.11 point short of 99.5%, and 3 of 5
    seeds end at 99.35-99.37%. Seed 1 is among the luckier draws, not the typical one.
    Train accuracy (on augmented images) is 99.3%, level with test: the network is not
    memorising any more, it has run out of capacity; more regularisation will not help.
    Time: twice step 2's multiply-adds (the padded 28x28 block 1 is 0.73 M of the 1.36 M),
    yet a slightly shorter epoch, because dropout is gone: on a CPU its masks over the
    large maps cost more than these narrow convolutions. The augmentation itself is one
    batched grid_sample, a few percent of the epoch (`make bench`).
    Next: more capacity where it pays within 8,000 parameters (wider middle block, a
    1x1 squeeze after block 1 to pay for it), more optimiser steps (batch 64), judged
    on five seeds rather than one.
"""
import math

import torch
import torch.nn as nn

from common import main_guard, parse_args, run_step

SETTINGS = dict(epochs=15, batch_size=128, lr=0.1)
# Each training image: rotated up to 10 degrees, zoomed by up to 10%, shifted up to 2 pixels.
AUGMENTATION = dict(degrees=10.0, zoom=0.1, shift=2.0)
WEIGHT_DECAY = 1e-4
WARMUP_END = 0.2  # share of the steps spent raising the rate to its peak
ANNEAL_END = 0.75  # share of the steps after which the rate stays at its floor


def conv_bn(in_channels, out_channels, padding=0):
    """3x3 convolution -> BatchNorm -> ReLU (no conv bias: BatchNorm has one). No dropout:
    the augmentation regularises, and dropout cost a third of the epoch on the CPU."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=padding, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU())


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        # Padding keeps block 1 at 28x28, so the middle block works at 14 -> 8 (step 2: 12 -> 8).
        self.block1 = nn.Sequential(conv_bn(1, 8, padding=1), conv_bn(8, 12, padding=1))  # 28, RF 5
        self.transition1 = nn.MaxPool2d(2)  # -> 14, RF 6
        self.block2 = nn.Sequential(conv_bn(12, 16), conv_bn(16, 16), conv_bn(16, 16))  # -> 8, RF 18
        self.transition2 = nn.MaxPool2d(2)  # -> 4, RF 20
        # Average over the 4x4 map (RF 20 + 3 * 4 = 32), then a 1x1 convolution to 10 classes.
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
