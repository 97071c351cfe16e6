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
# Generated by `make colab` (tools/make_colab.py) from common.py and step3_aug_sched.py.
# Do not edit: change those files and run `make colab` again.

# ------------------------------ from common.py
import argparse
import datetime
import hashlib
import json
import math
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from tqdm import tqdm

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # over the 60k training pixels, in [0, 1]
BACKGROUND = (0.0 - MNIST_MEAN) / MNIST_STD  # a black pixel after normalisation
TARGET_ACC = 99.4  # percent, the project's goal
DATA_DIR_ENV = "MNIST_DATA_DIR"
MNIST_FILES = {  # name -> (magic number, shape): the IDX header every MNIST file must carry
    "train-images-idx3-ubyte": (2051, (60000, 28, 28)), "train-labels-idx1-ubyte": (2049, (60000,)),
    "t10k-images-idx3-ubyte": (2051, (10000, 28, 28)), "t10k-labels-idx1-ubyte": (2049, (10000,))}


class UserError(Exception):
    """A problem the user can fix: printed as one message, without a traceback."""


def parse_args(doc, defaults, argv=None):
    """The options every step takes; `defaults` holds the step's real settings."""
    parser = argparse.ArgumentParser(
        description=doc.strip().split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog=f"The data folder can also be set with the {DATA_DIR_ENV} environment variable.")
    add = parser.add_argument
    add("--epochs", type=int, default=defaults["epochs"], help="passes over the training set")
    add("--batch-size", type=int, default=defaults["batch_size"], help="images per optimiser step")
    add("--lr", type=float, default=defaults["lr"], help="learning rate (peak rate of a schedule)")
    add("--seed", type=int, default=1, help="seeds weights, data order, dropout and augmentation")
    add("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto", help="auto: cuda, mps, else cpu")
    add("--data-dir", default=os.environ.get(DATA_DIR_ENV, "data"),
        help="folder holding MNIST/raw/*-ubyte; downloaded there if missing")
    add("--subset", type=int, help="train on the first N training images only (smoke runs)")
    add("--out", default="results", help="folder for the run's JSON, plots and checkpoint")
    add("--save-model", action="store_true", help="also write the trained weights to <out>/<step>.pt")
    args = parser.parse_args(argv)
    # Refuse bad values and an unavailable device now, before any data is read.
    for name in ("epochs", "batch_size", "lr", "subset"):
        value = getattr(args, name)
        if value is not None and not (value > 0 and math.isfinite(value)):
            parser.error(f"argument --{name.replace('_', '-')}: must be positive, got {value}")
    if args.device in ("cuda", "mps") and pick_device() != torch.device(args.device):
        parser.error(f"--device {args.device}: no {args.device.upper()} device is available here")
    return args


def pick_device(name="auto"):
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    return torch.device(name)


def seed_everything(seed):
    """Seed torch (weights, dropout); return a CPU generator for data order and augmentation."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def check_mnist_files(data_dir):
    """Refuse a damaged MNIST file, naming it: IDX header, size, and SHA256SUMS if present."""
    for name, (magic, shape) in MNIST_FILES.items():
        path = Path(data_dir, "MNIST", "raw", name)
        with open(path, "rb") as f:
            header = [int.from_bytes(f.read(4), "big") for _ in range(1 + len(shape))]
        if header != [magic, *shape]:
            raise UserError(f"{path} is corrupted: its header is not that of an MNIST file "
                            f"of shape {shape}. Delete it and download MNIST again.")
        expected_size = 8 + 4 * (len(shape) - 1) + math.prod(shape)
        if path.stat().st_size != expected_size:
            raise UserError(f"{path} is truncated or corrupted: {path.stat().st_size} bytes, "
                            f"expected {expected_size}. Delete it and download MNIST again.")
    sums = Path(data_dir, "SHA256SUMS")
    for line in sums.read_text().splitlines() if sums.exists() else []:
        digest, _, name = line.strip().partition("  ")
        if name and hashlib.sha256(Path(data_dir, name).read_bytes()).hexdigest() != digest:
            raise UserError(f"{Path(data_dir, name)} does not match its checksum in {sums}: "
                            f"the file is corrupted. Copy or download it again.")


def load_mnist(data_dir, device, subset=None):
    """Train and test images (normalised, N x 1 x 28 x 28) and labels, four tensors on `device`;
    downloaded through torchvision when files are missing."""
    if not all(Path(data_dir, "MNIST", "raw", name).exists() for name in MNIST_FILES):
        socket.setdefaulttimeout(15)  # fail in seconds, not minutes, without a network
        try:
            for train in (True, False):
                torchvision.datasets.MNIST(data_dir, train=train, download=True)
        except Exception as error:
            reason = (str(error).strip().splitlines() or [repr(error)])[-1].strip()
            raise UserError(f"MNIST is not in {os.path.abspath(data_dir)} and could not be downloaded "
                            f"({reason}).\nPoint --data-dir (or the {DATA_DIR_ENV} environment variable) at "
                            f"a folder holding MNIST/raw/ with the files {', '.join(MNIST_FILES)}.") from None
    check_mnist_files(data_dir)
    tensors = []
    for train in (True, False):
        dataset = torchvision.datasets.MNIST(data_dir, train=train)
        count = subset if train else None  # the test set is always all 10,000 images
        images = ((dataset.data[:count].float() / 255 - MNIST_MEAN) / MNIST_STD).unsqueeze(1)
        tensors += [images.to(device), dataset.targets[:count].to(device)]
    return tensors


def random_affine(n, augmentation, generator):
    """Per image: an angle in [-degrees, degrees], a zoom in [1 - zoom, 1 + zoom] and a
    shift in [-shift, shift] pixels along each axis, for `augmentation` = dict(degrees=...,
    zoom=..., shift=...). Drawn on the CPU generator: every device gets the same draws."""
    def uniform(*shape):  # in [-1, 1]
        return torch.rand(*shape, generator=generator) * 2 - 1
    angles = uniform(n) * augmentation["degrees"]
    zooms = 1 + uniform(n) * augmentation.get("zoom", 0.0)
    return angles, zooms, uniform(n, 2) * augmentation.get("shift", 0.0)


def affine(images, angles, zooms=None, shifts=None, displacement=None):
    """Rotate each image by its own angle (degrees, counter-clockwise as RandomRotation), zoom it
    (>1 enlarges) and shift it (pixels, x then y: right and down), in one bilinear grid_sample
    for the batch, filling with the background. `displacement` (N x H x W x 2, pixels) moves
    the point each output pixel is sampled from (elastic warps)."""
    n, size = len(images), images.shape[-1]
    radians = angles.to(images.device, images.dtype) * (math.pi / 180)
    zooms = torch.ones_like(radians) if zooms is None else zooms.to(radians)
    shifts = torch.zeros(n, 2).to(radians) if shifts is None else shifts.to(radians) * (2 / size)
    # affine_grid maps output coordinates to input ones: the inverse of the transform,
    # input = M (output - shift) with M = rotation / zoom.
    cos, sin = torch.cos(radians) / zooms, torch.sin(radians) / zooms
    matrix = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    offset = -(matrix @ shifts.unsqueeze(2))
    grid = F.affine_grid(torch.cat([matrix, offset], 2), list(images.shape), align_corners=False)
    if displacement is not None:
        grid = grid + displacement.to(grid) * (2 / size)
    # Sampling outside the image gives 0; shift values so that 0 is the background.
    return F.grid_sample(images - BACKGROUND, grid, mode="bilinear", align_corners=False) + BACKGROUND


def summarize(model, input_shape=(1, 1, 28, 28)):
    """Run one blank image through `model` and record, per leaf layer in the order it runs, its
    output shape, parameters, multiply-adds, receptive field r and jump j (input pixels between
    neighbouring outputs). Both start at 1; a layer of kernel k, stride s and dilation d gives
    r += (k - 1) * d * j and j *= s; global pooling is a kernel over its whole input."""
    rows, rf, jump = [], 1, 1

    def hook(module, inputs, output):
        nonlocal rf, jump
        # Convolutions and pools have these attributes (an int or a pair); other layers count as 1x1.
        kernel, stride, dilation = (nn.modules.utils._pair(getattr(module, name, 1))[0]
                                    for name in ("kernel_size", "stride", "dilation"))
        if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            kernel = stride = inputs[0].shape[-1] // output.shape[-1]
        rf += (kernel - 1) * dilation * jump
        jump *= stride
        macs = (output[0].numel() * module.weight[0].numel() if isinstance(module, nn.Conv2d) else
                module.weight.numel() if isinstance(module, nn.Linear) else 0)
        rows.append(dict(name=names[module], layer=type(module).__name__, shape=tuple(output.shape[1:]),
                         params=count_params(module), macs=macs, rf=rf, jump=jump))

    names = {m: n for n, m in model.named_modules()}
    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    was_training = model.training
    model.eval()  # BatchNorm must not update its statistics here
    with torch.no_grad():
        model(torch.zeros(input_shape, device=next(model.parameters()).device))
    for handle in handles:
        handle.remove()
    model.train(was_training)
    return rows


def format_summary(rows):
    lines = [f"{'layer':<14}{'type':<18}{'output':>12}{'params':>9}{'MACs':>10}{'RF':>5}{'jump':>6}"]
    lines += [f"{r['name']:<14}{r['layer']:<18}{'x'.join(map(str, r['shape'])):>12}{r['params']:>9,}"
              f"{r['macs']:>10,}{r['rf']:>5}{r['jump']:>6}" for r in rows]
    lines.append(f"total: {sum(r['params'] for r in rows):,} parameters, {sum(r['macs'] for r in rows):,} "
                 f"multiply-adds per image, receptive field {rows[-1]['rf']} px")
    return "\n".join(lines)


def count_params(model):
    return sum(p.numel() for p in model.parameters())


class Diverged(UserError):
    """The training loss became NaN or infinite."""


def train_epoch(model, optimizer, scheduler, images, labels, batch_size, generator,
                augmentation=None, desc="train", refresh_every=50):
    """One pass over the training set in a fresh random order, augmenting on the device when
    `augmentation` is given (see random_affine). Losses and counts stay on the device and are
    read every `refresh_every` steps (progress bar, divergence check): a GPU never waits."""
    model.train()
    device, n = images.device, len(images)
    order = torch.randperm(n, generator=generator).to(device)
    if augmentation:  # all of the epoch's random draws at once: one copy to the device
        angles, zooms, shifts = (t.to(device) for t in random_affine(n, augmentation, generator))
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    first_bad_step = torch.full((), -1, dtype=torch.long, device=device)
    batches = order.split(batch_size)
    # No bar when the output is not a terminal (CI, logs); the caller prints a line per epoch.
    bar = tqdm(batches, desc=desc, unit="batch", leave=False, dynamic_ncols=True, disable=None)
    start = time.perf_counter()
    for step, batch in enumerate(bar):
        x, y = images[batch], labels[batch]
        if augmentation:
            x = affine(x, angles[batch], zooms[batch], shifts[batch])
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss = loss.detach()
        first_bad_step = torch.where((first_bad_step < 0) & ~torch.isfinite(loss),
                                     torch.full_like(first_bad_step, step + 1), first_bad_step)
        loss_sum += loss * len(y)
        correct += (logits.argmax(1) == y).sum()
        if (step + 1) % refresh_every == 0 or step + 1 == len(batches):
            bad = int(first_bad_step)  # one read every refresh_every steps
            if bad >= 0:
                raise Diverged(f"the training loss became {float(loss):g} at step {bad}")
            seen = min((step + 1) * batch_size, n)
            bar.set_postfix(loss=f"{float(loss_sum) / seen:.4f}", acc=f"{100 * int(correct) / seen:.2f}%")
    return dict(train_loss=float(loss_sum) / n, train_acc=100 * int(correct) / n,
                train_seconds=time.perf_counter() - start)


@torch.inference_mode()
def evaluate(model, images, labels, batch_size=2000):
    """Test loss, accuracy (%) and the predicted labels, in large batches."""
    model.eval()
    logits = torch.cat([model(batch) for batch in images.split(batch_size)])
    predictions = logits.argmax(1)
    accuracy = 100 * (predictions == labels).float().mean().item()
    return F.cross_entropy(logits, labels).item(), accuracy, predictions


def write_atomically(path, text=None, save=None):
    """Write `text` (or call `save(file)`) so that `path` is the old or the new file, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            (save or (lambda f: f.write(text.encode())))(f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def prepare_out_dir(out):
    """Create the output folder and prove it is writable, before any training."""
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as error:
        raise UserError(f"cannot write to the output folder {out}: {error.strerror or error}. "
                        f"Choose another with --out.") from None
    return Path(out)


def save_figure(fig, path):
    """Write `fig` as a PNG; in a notebook (Colab, Jupyter: the inline backend) also show it."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    if "inline" in matplotlib.get_backend():
        plt.show()
    plt.close(fig)


def save_plots(prefix, history, test_images, test_labels, predictions):
    """<prefix>_curves.png, _misclassified.png and _confusion.png."""
    epochs = [e["epoch"] for e in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in ((ax_loss, "loss"), (ax_acc, "acc")):
        for split in ("train", "test"):
            ax.plot(epochs, [e[f"{split}_{metric}"] for e in history], "o-", label=split)
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log", title="loss")
    ax_acc.axhline(TARGET_ACC, color="gray", linestyle="--", label=f"{TARGET_ACC}%")
    # Scale to the second half of training, where 99.x is decided; the loss panel shows the start.
    late = [e[key] for e in history[len(history) // 2:] for key in ("train_acc", "test_acc")]
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy (second half scaled)",
               ylim=(max(90, min(min(late), TARGET_ACC) - 0.3), 100))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    save_figure(fig, f"{prefix}_curves.png")

    images, labels, preds = test_images.cpu(), test_labels.cpu(), predictions.cpu()
    wrong = (preds != labels).nonzero().flatten()
    fig, axes = plt.subplots(4, 10, figsize=(10, 4.6))
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong[:40]):
        ax.imshow(images[i, 0], cmap="gray_r")
        ax.set_title(f"{labels[i]}→{preds[i]}", fontsize=9, color="crimson")
    fig.suptitle(f"misclassified test digits (true→predicted): first {len(wrong[:40])} of {len(wrong)}")
    save_figure(fig, f"{prefix}_misclassified.png")

    confusion = torch.zeros(10, 10, dtype=torch.long)
    confusion.index_put_((labels, preds), torch.ones_like(labels), accumulate=True)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(confusion - torch.diag(confusion.diagonal()), cmap="Reds")  # colour the errors
    for t in range(10):
        for p in range(10):
            ax.text(p, t, int(confusion[t, p]), ha="center", va="center", fontsize=7,
                    color="black" if t != p else "gray")
    ax.set(xlabel="predicted", ylabel="true", xticks=range(10), yticks=range(10),
           title="confusion matrix (colour: errors only)")
    save_figure(fig, f"{prefix}_confusion.png")


def train_one_seed(step, model_class, make_optimizer, args, data, device, seed, json_path,
                   augmentation=None):
    """Train one model; return the run's record (also written to `json_path`), the model and
    the last test predictions."""
    train_x, train_y, test_x, test_y = data
    generator = seed_everything(seed)
    model = model_class().to(device)
    rows = summarize(model)
    print(format_summary(rows))
    optimizer, scheduler = make_optimizer(model, args, math.ceil(len(train_x) / args.batch_size))
    record = dict(step=step, seed=seed, params=count_params(model), receptive_field=rows[-1]["rf"],
                  macs=sum(r["macs"] for r in rows), device=str(device), threads=torch.get_num_threads(),
                  torch=torch.__version__, date=f"{datetime.datetime.now():%Y-%m-%d %H:%M}",
                  settings=dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, subset=args.subset,
                                augmentation=augmentation), status="running", epochs=[], seconds=0.0)
    start = time.perf_counter()
    try:  # the JSON is rewritten after every epoch and when training stops, however it stops
        for epoch in range(1, args.epochs + 1):
            lr = optimizer.param_groups[0]["lr"]
            stats = train_epoch(model, optimizer, scheduler, train_x, train_y, args.batch_size,
                                generator, augmentation, desc=f"epoch {epoch}/{args.epochs}")
            test_loss, test_acc, predictions = evaluate(model, test_x, test_y)
            record["epochs"].append(dict(epoch=epoch, lr=lr, **stats, test_loss=test_loss, test_acc=test_acc))
            record["seconds"] = time.perf_counter() - start
            tqdm.write(f"epoch {epoch:2d}/{args.epochs}  lr {lr:.4f}  train loss {stats['train_loss']:.4f} "
                       f"acc {stats['train_acc']:.2f}%  test loss {test_loss:.4f} acc {test_acc:.2f}%  "
                       f"({stats['train_seconds']:.1f} s)")
            write_atomically(json_path, json.dumps(record, indent=1))
        record["status"] = "complete"
    except KeyboardInterrupt:
        record["status"] = "interrupted"
        raise
    except Diverged as error:
        record["status"] = "diverged"
        done = len(record["epochs"])
        raise Diverged(f"{error} of epoch {done + 1}: training stopped. The {done} finished epochs "
                       f"are in {json_path}. Try a smaller --lr.") from None
    finally:
        write_atomically(json_path, json.dumps(record, indent=1))
    return record, model, predictions


def run_step(step, model_class, make_optimizer, args, augmentation=None):
    """What `python stepN_*.py` does: check, load, train, write."""
    device = pick_device(args.device)
    out = prepare_out_dir(args.out)
    data = load_mnist(args.data_dir, device, args.subset)
    print(f"{step}: {len(data[0]):,} training images, {len(data[2]):,} test images, device {device}")
    record, model, predictions = train_one_seed(step, model_class, make_optimizer, args, data, device,
                                                args.seed, out / f"{step}.json", augmentation)
    save_plots(out / step, record["epochs"], data[2], data[3], predictions)
    if args.save_model:  # read back by tools/robustness.py
        checkpoint = {"step": step, "state_dict": model.state_dict()}
        write_atomically(out / f"{step}.pt", save=lambda f: torch.save(checkpoint, f))
    accuracies = [e["test_acc"] for e in record["epochs"]]
    print(f"{step}: {record['params']:,} parameters, final test accuracy {accuracies[-1]:.2f}% (best "
          f"{max(accuracies):.2f}%, {sum(a >= TARGET_ACC for a in accuracies)} epochs at ≥ {TARGET_ACC}%). "
          f"Wrote {out / step}.json and its plots.")


def main_guard(main):
    """Run a step's main: a UserError becomes one message and exit code 1, Ctrl-C exit 130."""
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("\ninterrupted: the epochs finished so far are in the run's JSON.", file=sys.stderr)
        sys.exit(130)

# ------------------------------ from step3_aug_sched.py
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


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
