"""Step 3: augmentation, a rate schedule and anti-aliased pools hold 99.4% under 8,000 parameters.

Target
    At least 99.4% test accuracy in each of the last 5 of 15 epochs, on every seed, with fewer than
    8,000 parameters and no fully connected layer. Step 2 stalled near 99.2% and learned only the
    digits as written, so: a rate schedule (a warm-up to --lr over 20% of the steps, a cosine down to
    1% of it by 75%, then flat); every digit rotated (up to 10 degrees), zoomed (10%) and shifted
    (2 px) at random; three padded convolutions at 28x28 (7x7 pixels: strokes and their bends);
    anti-aliased pools (a max at stride 1, a fixed blur at stride 2: a digit moved by a pixel gives
    nearly the same features); the last 3x3 convolution after the second pool.

Result (`make all`: seed 1, 2 threads; `make seeds`: report seeds 31-40, 1 thread each; CPU)
    7,662 parameters, 1.65 M multiply-adds per image, receptive field 40 px. Seed 1: final
    99.61% (best 99.66%), at or above 99.4% from epoch 7 on (timings: results.md). Seeds 31-40:
    final 99.56% +- 0.04 (mean, sample std); worst of the last 5 epochs 99.41% (seed 35);
    10 of 10 pass. Moved test digits (results.md): 97.93% rotated up to 30 degrees (step 2:
    95.78%), 98.87% shifted 4 px (93.66%); but with strokes 1 px thinner 90.73%, below
    step 1's 95.32%: the augmentation never thins a stroke.

Analysis
    The goal holds on all ten report seeds. From epoch 12 (the rate near its floor)
    a seed moves by under 0.1 point an epoch, about the test set's own sampling error, and
    10 passes in 10 still allow a failure rate up to 26%: so a change is judged on many seeds,
    paired, on the validation split (EXPERIMENTS.md). Dropout stays from earlier test-set
    comparisons made before runs recorded their code (not paired like for like); it draws only
    the gaps between drops (common.py): the same odds, in less time. Where 7,662 stands: on
    development seeds, every width x0.85 (5,768 parameters) passed 10 of 10 and
    x0.7 (3,833) 7 of 10; x0.7 without dropout and with its cosine run to the last step,
    chosen on validation, passed 1 of 10 of its own report seeds 41-50, the worst of its last 5
    epochs 99.27%: validation had judged the final epoch only. Its two gains were then judged on
    step 3 (validation, paired, seeds 21-30): a moving average of the weights for the test moved
    the final epoch by -0.005 +- 0.005 and the worst of the last 5 by -0.018 +- 0.008; the cosine
    run to the last step moved them by +0.020 +- 0.014 and -0.103 +- 0.016 (4 seeds, stopped early).
    Neither gains here: step 3 keeps testing its own weights, its rate flat for the last epochs.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import BatchNorm2dBySums, DropoutByGaps, main_guard, parse_args, run_step

SETTINGS = dict(epochs=15, batch_size=128, lr=0.1)
AUGMENTATION = dict(degrees=10.0, zoom=0.1, shift=2.0)  # per image: up to 10°, 10% zoom, 2 px shift
WIDTHS = (8, 8, 12, 14, 16, 16)  # channels: three convolutions at 28x28, two from 14 to 10, one after the last pool
DROPOUT = 0.05
WEIGHT_DECAY = 1e-4
WARMUP_END = 0.2  # share of the steps spent raising the rate to its peak
ANNEAL_END = 0.75  # share of the steps after which the rate stays at its floor
RATE_FLOOR = 0.01  # the floor, as a share of --lr


def conv_bn(in_channels, out_channels, padding=0):
    """3x3 convolution -> BatchNorm -> ReLU -> dropout (no conv bias: BatchNorm has one): step 2's BatchNorm and
    dropout, computed in less time on a CPU (common.py: plain sums; the gaps between drops), the same maths."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=padding, bias=False),
                         BatchNorm2dBySums(out_channels), nn.ReLU(), DropoutByGaps(DROPOUT))


class BinomialBlur(nn.Module):
    """A fixed 3x3 blur ([1, 2, 1] x [1, 2, 1] / 16) of each channel, at stride 2."""
    kernel_size, stride, padding = 3, 2, 1  # as a pool has them: the receptive-field table reads them

    def __init__(self):
        super().__init__()
        binomial = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("weight", (binomial[:, None] * binomial[None, :] / 16)[None, None])

    def forward(self, x):
        return F.conv2d(x, self.weight.expand(x.shape[1], 1, 3, 3), stride=self.stride, padding=self.padding,
                        groups=x.shape[1])


def pool():
    """Anti-aliased max-pool (Zhang, 2019): the max over 2x2 at stride 1, then the blur at stride 2:
    a digit shifted by a pixel gives nearly the same output, not whichever of four pixels a max keeps."""
    return nn.Sequential(nn.MaxPool2d(2, stride=1), BinomialBlur())


class Net(nn.Module):
    def __init__(self, widths=WIDTHS):
        super().__init__()
        a, b, c, d, e, f = widths
        # Three padded convolutions see 7x7 pixels at 28x28 before the first pool (step 2: 5x5).
        self.block1 = nn.Sequential(conv_bn(1, a, padding=1), conv_bn(a, b, padding=1),
                                    conv_bn(b, c, padding=1))  # 28, RF 7
        self.transition1 = pool()  # -> 14, RF 10
        self.block2 = nn.Sequential(conv_bn(c, d), conv_bn(d, e))  # -> 10, RF 18
        self.transition2 = pool()  # -> 5, RF 24
        self.block3 = conv_bn(e, f)  # -> 3, RF 32: each output sees more than the digit
        # Average over the 3x3 map (RF 32 + 2 * 4 = 40), then a 1x1 convolution to 10 classes.
        self.output = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(f, 10, 1), nn.Flatten())

    def forward(self, x):
        return self.output(self.block3(self.transition2(self.block2(self.transition1(self.block1(x))))))


def make_optimizer(model, args, steps_per_epoch, weight_decay=WEIGHT_DECAY, warmup_end=WARMUP_END,
                   anneal_end=ANNEAL_END, rate_floor=RATE_FLOOR):
    """SGD with Nesterov momentum; the rate rises from 4% to 100% of --lr until `warmup_end` of
    the steps, falls along a cosine to `rate_floor` at `anneal_end` and stays there."""
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)

    def rate_factor(step):
        progress = step / (args.epochs * steps_per_epoch)
        if progress < warmup_end:
            return 0.04 + 0.96 * progress / warmup_end
        anneal = min(1.0, (progress - warmup_end) / (anneal_end - warmup_end))
        return rate_floor + (1 - rate_floor) * (1 + math.cos(math.pi * anneal)) / 2

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, rate_factor)


def main(argv=None):
    return run_step("step3_aug_sched", Net, make_optimizer, parse_args(__doc__, SETTINGS, argv), AUGMENTATION)


if __name__ == "__main__":
    main_guard(main)
