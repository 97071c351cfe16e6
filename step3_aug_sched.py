"""Step 3: rotation augmentation and a one-cycle schedule hold 99.4% with < 8,000 parameters.

Target
    Step 2's network, trained better: every training image rotated by its own random
    angle in [-ROTATE_DEGREES, ROTATE_DEGREES] (done in batches on the device), and a
    one-cycle learning-rate schedule (warm up to --lr, then anneal to almost zero) with
    Nesterov momentum and a little weight decay. Goal: at least 99.4% test accuracy in
    each of the last epochs of at most 15, on any seed, with fewer than 8,000 parameters.

Result
    RESULT-STEP3

Analysis
    ANALYSIS-STEP3
"""
import torch
import torch.nn as nn

from common import main_guard, parse_args, run_step

SETTINGS = dict(epochs=15, batch_size=128, lr=0.1)
DROPOUT = 0.05
ROTATE_DEGREES = 7.0
WEIGHT_DECAY = 1e-4
WARMUP_FRACTION = 0.2  # share of the steps spent raising the rate to its peak


def conv_bn(in_channels, out_channels, padding=0):
    """3x3 convolution -> BatchNorm -> ReLU -> dropout (no conv bias: BatchNorm has one)."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=padding, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(), nn.Dropout(DROPOUT))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block1 = nn.Sequential(conv_bn(1, 8), conv_bn(8, 8))  # 28 -> 24, RF 5
        self.transition1 = nn.MaxPool2d(2)  # -> 12, RF 6
        self.block2 = nn.Sequential(conv_bn(8, 16), conv_bn(16, 16))  # -> 8, RF 14
        self.transition2 = nn.MaxPool2d(2)  # -> 4, RF 16
        self.block3 = conv_bn(16, 24, padding=1)  # -> 4, RF 24
        self.output = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(24, 10, 1), nn.Flatten())

    def forward(self, x):
        x = self.transition1(self.block1(x))
        x = self.transition2(self.block2(x))
        return self.output(self.block3(x))


def make_optimizer(model, args, steps_per_epoch):
    """SGD with Nesterov momentum under a one-cycle schedule, stepped every batch."""
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True,
                                weight_decay=WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=WARMUP_FRACTION)
    return optimizer, scheduler


def main(argv=None):
    args = parse_args(__doc__, SETTINGS, argv)
    run_step("step3_aug_sched", Net, make_optimizer, args, rotate_degrees=ROTATE_DEGREES)


if __name__ == "__main__":
    main_guard(main)
