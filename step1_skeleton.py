"""Step 1: the skeleton, a plain CNN whose receptive field covers the whole digit.

Target
    Get the structure right before tuning anything: two blocks of 3x3 convolutions, each
    closed by a max-pool transition, and a last 4x4 convolution that sees the whole
    4x4 map and gives the 10 logits. No BatchNorm, no dropout, no augmentation, a
    constant learning rate: the baseline that every later change is measured against.
    Convolutions without padding shrink the map 28 -> 26 -> 24, so the costly
    full-resolution layers stay few and narrow.

Result
    RESULT-STEP1

Analysis
    ANALYSIS-STEP1
"""
import torch
import torch.nn as nn

from common import main_guard, parse_args, run_step

SETTINGS = dict(epochs=15, batch_size=128, lr=0.01)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block1 = nn.Sequential(  # 28x28 -> 24x24, receptive field 5
            nn.Conv2d(1, 8, 3), nn.ReLU(),
            nn.Conv2d(8, 16, 3), nn.ReLU(),
        )
        self.transition1 = nn.MaxPool2d(2)  # -> 12x12, RF 6
        self.block2 = nn.Sequential(  # -> 8x8, RF 14
            nn.Conv2d(16, 16, 3), nn.ReLU(),
            nn.Conv2d(16, 32, 3), nn.ReLU(),
        )
        self.transition2 = nn.MaxPool2d(2)  # -> 4x4, RF 16
        self.block3 = nn.Sequential(  # -> 4x4, RF 24
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        )
        # A 4x4 kernel over the 4x4 map: a fully connected layer in convolutional form.
        self.output = nn.Sequential(nn.Conv2d(32, 10, 4), nn.Flatten())  # -> 10, RF 36

    def forward(self, x):
        x = self.transition1(self.block1(x))
        x = self.transition2(self.block2(x))
        return self.output(self.block3(x))


def make_optimizer(model, args, steps_per_epoch):
    """Plain SGD with momentum at a constant rate: no schedule yet."""
    return torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9), None


def main(argv=None):
    args = parse_args(__doc__, SETTINGS, argv)
    run_step("step1_skeleton", Net, make_optimizer, args)


if __name__ == "__main__":
    main_guard(main)
