"""What a step needs to train and report one run, top to bottom: settings, options, data, augmentation, the
receptive-field table, training, outputs (files, plots), one run (`run_step`, which each step's `main` calls)."""
import argparse
import hashlib
import inspect
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import matplotlib
import matplotlib.patches
import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # over the 60k training pixels, in [0, 1]
BACKGROUND = (0.0 - MNIST_MEAN) / MNIST_STD  # a black pixel after normalisation
TARGET_ACC = 99.4  # percent, the project's goal
TRAIN_IMAGES, VALIDATION_IMAGES = 60000, 10000  # --validation holds out the last 10,000 training images
DATA_DIR_ENV = "MNIST_DATA_DIR"
MNIST_FILES = {  # name -> (magic number, shape): the IDX header every MNIST file must carry
    "train-images-idx3-ubyte": (2051, (60000, 28, 28)), "train-labels-idx1-ubyte": (2049, (60000,)),
    "t10k-images-idx3-ubyte": (2051, (10000, 28, 28)), "t10k-labels-idx1-ubyte": (2049, (10000,))}


class UserError(Exception):
    """A problem the user can fix: printed as one message, without a traceback."""


def parse_args(doc, defaults, argv=None):
    """The options every step takes; `defaults` holds the step's real settings."""
    parser = argparse.ArgumentParser(description=doc.strip().split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    add("--epochs", type=int, default=defaults["epochs"], help="passes over the training set")
    add("--batch-size", type=int, default=defaults["batch_size"], help="images per optimiser step")
    add("--lr", type=float, default=defaults["lr"], help="learning rate (peak rate of a schedule)")
    add("--seed", type=int, default=1, help="seeds weights, data order, dropout and augmentation")
    add("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto", help="auto: cuda, mps, else cpu")
    add("--data-dir", default=os.environ.get(DATA_DIR_ENV, "data"),
        help=f"folder holding MNIST/raw/*-ubyte, downloaded there if missing; also set by {DATA_DIR_ENV}")
    add("--subset", type=int, help="train on the first N training images only (smoke runs)")
    add("--validation", action="store_true", help=f"train on the first {TRAIN_IMAGES - VALIDATION_IMAGES:,} "
        f"training images, measure on the last {VALIDATION_IMAGES:,}, never on the test set: for choosing")
    add("--out", default="results", help="folder for the run's JSON, plots and checkpoint")
    add("--save-model", action="store_true", help="also write the trained weights to <out>/<step>.pt")
    args = parser.parse_args(argv)
    # Refuse bad values and an unavailable device now, before any data is read.
    for name, value in ((n, getattr(args, n)) for n in ("epochs", "batch_size", "lr", "subset")):
        if value is not None and not (value > 0 and math.isfinite(value)):
            parser.error(f"argument --{name.replace('_', '-')}: must be positive, got {value}")
    if (args.subset or 0) > (available := TRAIN_IMAGES - VALIDATION_IMAGES * args.validation):
        parser.error(f"argument --subset: {args.subset:,} is more than the {available:,} training images there are")
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
        size, expected_size = path.stat().st_size, 8 + 4 * (len(shape) - 1) + math.prod(shape)
        if header != [magic, *shape] or size != expected_size:
            raise UserError(f"{path} is truncated or corrupted: {size} bytes (expected {expected_size}), header "
                            f"{header} (expected {[magic, *shape]}). Delete it and download MNIST again.")
    sums = Path(data_dir, "SHA256SUMS")
    for line in sums.read_text().splitlines() if sums.exists() else []:
        digest, _, name = line.strip().partition("  ")
        if name and hashlib.sha256(Path(data_dir, name).read_bytes()).hexdigest() != digest:
            raise UserError(f"{Path(data_dir, name)} does not match its checksum in {sums}: "
                            f"the file is corrupted. Copy or download it again.")


def load_mnist(data_dir, device, subset=None, validation=False):
    """Training and evaluation images (normalised, N x 1 x 28 x 28) and labels on `device`, downloaded if
    missing. The evaluation set is the test set, or with `validation` the last 10,000 training images."""
    if not all(Path(data_dir, "MNIST", "raw", name).exists() for name in MNIST_FILES):
        socket.setdefaulttimeout(15)  # fail in seconds, not minutes, without a network
        try:
            import torchvision  # only to download: importing it takes longer than one step's data
            for train in (True, False):
                torchvision.datasets.MNIST(data_dir, train=train, download=True)
        except Exception as error:
            reason = (str(error).strip().splitlines() or [repr(error)])[-1].strip()
            raise UserError(f"MNIST is not in {os.path.abspath(data_dir)} and could not be downloaded "
                            f"({reason}).\nPoint --data-dir (or the {DATA_DIR_ENV} environment variable) at "
                            f"a folder holding MNIST/raw/ with the files {', '.join(MNIST_FILES)}.") from None
    check_mnist_files(data_dir)
    raw = [torch.frombuffer(bytearray(Path(data_dir, "MNIST", "raw", name).read_bytes()), dtype=torch.uint8)
           [4 + 4 * len(shape):].view(shape) for name, (_, shape) in MNIST_FILES.items()]  # after the IDX header
    train_x, eval_x = (((x.float() / 255 - MNIST_MEAN) / MNIST_STD).unsqueeze(1) for x in raw[0::2])
    train_y, eval_y = (y.long() for y in raw[1::2])
    if validation:  # held out: never trained on; the test set is not used at all
        train_x, train_y, eval_x, eval_y = (train_x[:-VALIDATION_IMAGES], train_y[:-VALIDATION_IMAGES],
                                            train_x[-VALIDATION_IMAGES:], train_y[-VALIDATION_IMAGES:])
    return [t.to(device) for t in (train_x[:subset], train_y[:subset], eval_x, eval_y)]


def random_affine(n, augmentation, generator):
    """Per image, for `augmentation` = dict(degrees=..., zoom=..., shift=...): an angle, a zoom - 1
    and a shift (pixels, each axis) within +-each, on the CPU generator: the same on any device."""
    uniform = lambda *shape: torch.rand(*shape, generator=generator) * 2 - 1  # in [-1, 1]
    angles, zooms = uniform(n) * augmentation["degrees"], 1 + uniform(n) * augmentation.get("zoom", 0.0)
    return angles, zooms, uniform(n, 2) * augmentation.get("shift", 0.0)


def affine(images, angles, zooms=None, shifts=None):
    """Rotate each image by its own angle (degrees, counter-clockwise as RandomRotation), zoom it (>1 enlarges)
    and shift it (pixels, x then y: right and down), in one bilinear grid_sample for the batch, filling with
    the background."""
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
    # Sampling outside the image gives 0; shift values so that 0 is the background.
    return F.grid_sample(images - BACKGROUND, grid, mode="bilinear", align_corners=False) + BACKGROUND


def summarize(model, input_shape=(1, 1, 28, 28)):
    """Run one blank image through `model` and record, per leaf layer in the order it runs, its input and output
    shapes, kernel k, padding p, stride s, parameters, multiply-adds, and before and after it the receptive field
    r, the jump j (input pixels between neighbouring units) and c, the centre of the first unit's field. From
    r = j = 1 and c = 0: c += ((k - 1) d / 2 - p) j, r += (k - 1) d j, j *= s (d: dilation); a global pool's k is
    its input's size. Layers without a kernel (BatchNorm, ReLU, dropout) count as k = 1."""
    rows, rf, jump, start = [], 1, 1, 0.0

    def hook(module, inputs, output):
        nonlocal rf, jump, start
        kernel, stride, dilation, padding = (nn.modules.utils._pair(getattr(module, name, int(name != "padding")))[0]
                                             for name in ("kernel_size", "stride", "dilation", "padding"))
        if is_global := isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            kernel = stride = inputs[0].shape[-1] // output.shape[-1]
        before = dict(rf_in=rf, jump_in=jump, start_in=start)
        start += ((kernel - 1) * dilation / 2 - padding) * jump
        rf += (kernel - 1) * dilation * jump
        jump *= stride
        weight = getattr(module, "weight", None)  # a convolution's, or a fixed filter's (a buffer)
        macs = (output[0].numel() * weight[0].numel() if isinstance(weight, torch.Tensor) and weight.dim() == 4 else
                weight.numel() if isinstance(module, nn.Linear) else 0)
        rows.append(dict(name=names[module], layer=type(module).__name__, input=tuple(inputs[0].shape[1:]),
                         shape=tuple(output.shape[1:]), kernel=kernel, padding=padding, stride=stride, **before,
                         jump=jump, rf=rf, start=start, params=count_params(module), macs=macs,
                         spatial=is_global or hasattr(module, "kernel_size")))

    names = {m: n for n, m in model.named_modules()}
    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    was_training = model.training
    with torch.no_grad():  # in eval mode: BatchNorm must not update its statistics here
        model.eval()(torch.zeros(input_shape, device=next(model.parameters()).device))
    for handle in handles:
        handle.remove()
    model.train(was_training)
    return rows


def format_summary(rows):
    """The receptive-field table (markdown): one line per layer with a kernel (convolution, pool, blur), the
    layers after it that keep its size (BatchNorm, ReLU, dropout) folded in, with their parameters."""
    table, size = [], lambda shape: "x".join(map(str, shape))
    for r in rows:
        if r["spatial"] or not table:
            table.append(dict(r, ops=[r["layer"]]))
        else:
            table[-1].update(shape=r["shape"], params=table[-1]["params"] + r["params"], ops=table[-1]["ops"] + [r["layer"]])
    lines = ["| layer | operation | input | kernel | padding | stride | output | jump in | jump out | RF in | RF out "
             "| params | MACs |", "|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['name']} | {' + '.join(r['ops'])} | {size(r['input'])} | {r['kernel']} | {r['padding']} | "
              f"{r['stride']} | {size(r['shape'])} | {r['jump_in']} | {r['jump']} | {r['rf_in']} | {r['rf']} | "
              f"{r['params']:,} | {r['macs']:,} |" for r in table]
    lines.append(f"\ntotal: {sum(r['params'] for r in rows):,} parameters, {sum(r['macs'] for r in rows):,} "
                 f"multiply-adds per image, receptive field {rows[-1]['rf']} px")
    return "\n".join(lines)


def count_params(model):
    return sum(p.numel() for p in model.parameters())


class Diverged(UserError):
    """The training loss became NaN or infinite."""


def train_epoch(model, optimizer, scheduler, images, labels, batch_size, generator, augmentation=None,
                desc="train", refresh_every=50):
    """One pass over the training set in a fresh order, each digit warped (`affine`) if `augmentation` is given.
    Losses and counts stay on the device, read every `refresh_every` steps: a GPU never waits."""
    model.train()
    device, n = images.device, len(images)
    order = torch.randperm(n, generator=generator).to(device)
    if augmentation:  # all of the epoch's random draws at once: one copy to the device
        angles, zooms, shifts = (t.to(device) for t in random_affine(n, augmentation, generator))
    loss_sum, correct = torch.zeros((), device=device), torch.zeros((), dtype=torch.long, device=device)
    batches = order.split(batch_size)
    bar = tqdm(batches, desc=desc, unit="batch", leave=False, dynamic_ncols=True, disable=None)
    if bar.disable:  # not a terminal (CI, logs): no bar, so read the device once, at the end
        refresh_every = len(batches)
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
        loss_sum += loss.detach() * len(y)  # NaN or infinite from the first bad step on
        correct += (logits.argmax(1) == y).sum()
        if (step + 1) % refresh_every == 0 or step + 1 == len(batches):
            if not math.isfinite(float(loss_sum)):  # one read every refresh_every steps
                raise Diverged(f"the training loss became {float(loss_sum):g} by step {step + 1}")
            seen = min((step + 1) * batch_size, n)
            bar.set_postfix(loss=f"{float(loss_sum) / seen:.4f}", acc=f"{100 * int(correct) / seen:.2f}%")
    return dict(train_loss=float(loss_sum) / n, train_acc=100 * int(correct) / n,
                train_seconds=time.perf_counter() - start)


@torch.inference_mode()
def evaluate(model, images, labels, batch_size=500):
    """Test loss, accuracy (%) and predicted labels; batches of 500: twice as fast as 2,000 on a CPU."""
    model.eval()
    logits = torch.cat([model(batch) for batch in images.split(batch_size)])
    predictions = logits.argmax(1)
    accuracy = 100 * (predictions == labels).float().mean().item()
    return F.cross_entropy(logits, labels).item(), accuracy, predictions


def write_atomically(path, text=None, save=None):
    """Write `text` (or call `save(file)`) so that `path` is the old or the new file, never half;
    a full disk or any other OSError is one clear UserError naming the file."""
    path, tmp = Path(path), None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            (save or (lambda f: f.write(text.encode())))(f)
        os.replace(tmp, path)
    except BaseException as error:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(error, OSError):
            raise UserError(f"cannot write {path}: {error.strerror or error}") from None
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
    write_atomically(path, save=lambda f: fig.savefig(f, format="png", dpi=100))
    if "inline" in matplotlib.get_backend():
        plt.show()
    plt.close(fig)


def save_plots(prefix, history, images, labels, predictions, split="test"):
    """<prefix>_curves.png, _misclassified.png and _confusion.png (`split`: the set `images` are from)."""
    epochs = [e["epoch"] for e in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_acc.axhline(TARGET_ACC, color="gray", linestyle="--", label=f"{TARGET_ACC}%")
    for ax, metric in ((ax_loss, "loss"), (ax_acc, "acc")):
        for name in ("train", split):
            ax.plot(epochs, [e[f"{name}_{metric}"] for e in history], "o-", label=name)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log", title="loss")
    # Scale to the second half of training, where 99.x is decided; the loss panel shows the start.
    late = [e[key] for e in history[len(history) // 2:] for key in ("train_acc", f"{split}_acc")]
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy (second half scaled)",
               ylim=(max(90, min(min(late), TARGET_ACC) - 0.3), 100))
    save_figure(fig, f"{prefix}_curves.png")

    images, labels, preds = images.cpu().numpy(), labels.cpu(), predictions.cpu()
    wrong = (preds != labels).nonzero().flatten().tolist()
    fig, axes = plt.subplots(4, 10, figsize=(10, 4.6), subplot_kw=dict(xticks=[], yticks=[], frame_on=False))
    for ax, i in zip(axes.flat, wrong[:40]):
        ax.imshow(images[i, 0], cmap="gray_r")
        ax.set_title(f"{labels[i]}→{preds[i]}", fontsize=9, color="crimson")
    fig.suptitle(f"misclassified {split} digits (true→predicted): first {len(wrong[:40])} of {len(wrong)}")
    save_figure(fig, f"{prefix}_misclassified.png")
    confusion = torch.bincount(labels * 10 + preds, minlength=100).view(10, 10)  # row: true, column: predicted
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow((confusion - torch.diag(confusion.diagonal())).numpy(), cmap="Reds")  # colour the errors
    for t, p in confusion.nonzero().tolist():  # the counts, zeros left blank
        ax.text(p, t, confusion[t, p].item(), ha="center", va="center", fontsize=7, color="black" if t != p else "gray")
    ax.set(xlabel="predicted", ylabel="true", xticks=range(10), yticks=range(10),
           title=f"confusion matrix, {split} digits (colour: errors only)")
    save_figure(fig, f"{prefix}_confusion.png")


def receptive_field_figure(path, model, rows, images, count=100):
    """The centre unit of the last map with a size (what the global average or the output layer reads; its
    channels summed): its theoretical receptive field as a square over a digit, and beside it its effective one,
    the mean |gradient| of the unit with respect to the input over `count` digits. Returns the side of the
    smallest centred square that holds half of that gradient."""
    reader = next(r for r in rows if len(r["input"]) == 3 and r["input"][-1] > 1 and math.prod(r["shape"][1:]) == 1)
    maps = []
    handle = dict(model.named_modules())[reader["name"]].register_forward_hook(lambda m, i, o: maps.append(i[0]))
    x = images[:count].clone().requires_grad_()
    model.eval()(x)
    handle.remove()
    unit = maps[0].shape[-1] // 2
    gradient = torch.autograd.grad(maps[0][:, :, unit, unit].sum(), x)[0].abs().mean(0)[0].cpu()
    rf, centre = reader["rf_in"], reader["start_in"] + unit * reader["jump_in"]  # in pixels of the input
    pixels = torch.arange(gradient.shape[-1]) - centre
    distance = torch.maximum(pixels.abs()[:, None], pixels.abs()[None, :])  # to the centre, along either axis
    half = next(2 * d + 1 for d in range(gradient.shape[-1]) if gradient[distance <= d].sum() >= gradient.sum() / 2)
    corner, side = centre - rf / 2, gradient.shape[-1]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.6))
    titles = (f"theoretical receptive field: {rf} x {rf} px", f"effective: mean |gradient| over {len(x)} digits;\n"
              f"half of it within the central {half} x {half} px")
    for ax, picture, cmap, title in zip(axes, (images[0, 0].cpu().numpy(), gradient.numpy()), ("gray_r", "magma"),
                                        titles):
        ax.imshow(picture, cmap=cmap)
        ax.add_patch(matplotlib.patches.Rectangle((corner, corner), rf, rf, fill=False, color="crimson", lw=2))
        ax.set(xlim=(min(corner, -0.5) - 1, max(corner + rf, side - 0.5) + 1), xticks=[], yticks=[], title=title,
               ylim=(max(corner + rf, side - 0.5) + 1, min(corner, -0.5) - 1))
    fig.suptitle(f"the centre unit of {reader['name']}'s input ({'x'.join(map(str, reader['input']))}) and the "
                 f"28 x 28 digit")
    save_figure(fig, path)
    return half, rf


def fingerprint(*paths):
    """The first 12 hex digits of the SHA-256 of these files, in order: which code trained a run."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:12]


def provenance(step, model_class, device, variant, recipe_file=None):
    """What made a run: the commit (and whether its code, not its outputs, differed), the fingerprint of the code
    that trains it (the step's file and this one's; a variant's recipe file apart), the step's constants (a
    variant's are in its recipe), threads, device, torch; on CUDA TF32 and determinism."""
    module = sys.modules.get(step) or sys.modules[model_class.__module__]
    files = [getattr(module, "__file__", None), globals().get("__file__")]  # one file when inlined (Colab)
    code = dict(code_fingerprint=fingerprint(*dict.fromkeys(files)) if all(files) else None,
                **(dict(recipe_fingerprint=fingerprint(recipe_file)) if recipe_file else {}))
    if not recipe_file:
        code["constants"] = {k: v for k, v in vars(module).items() if k.isupper() and not inspect.ismodule(v)}
    git = ["git", "-C", str(Path(files[0] or ".").resolve().parent)]
    try:
        read = lambda *a: subprocess.run(git + [*a], capture_output=True, text=True, timeout=10, check=True).stdout
        changed = read("status", "--porcelain", "-uno", "--", ":/*.py", ":/Makefile", ":/requirements.txt")
        code.update(commit=read("rev-parse", "HEAD").strip(), uncommitted_changes=bool(changed))
    except (OSError, subprocess.SubprocessError):  # a copied step (Colab): no repository
        code.update(commit=None, uncommitted_changes=None, repository="none: not run from a git repository")
    cudnn = torch.backends.cudnn  # on CUDA, TF32 and determinism change the numbers
    cuda = {} if device.type != "cuda" else dict(tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
        tf32_cudnn=cudnn.allow_tf32, cudnn_benchmark=cudnn.benchmark, cudnn_deterministic=cudnn.deterministic)
    return dict(**code, variant=variant, device=str(device), threads=torch.get_num_threads(), torch=torch.__version__,
                **cuda)


def claim_record(json_path):
    """Refuse, in one line, a record that a live process is still writing (its lock names it); else lock it."""
    lock = Path(f"{json_path}.lock")
    if lock.exists():
        owner = lock.read_text().strip()
        try:
            os.kill(int(owner), 0)  # signal 0: only asks whether that process is alive
            raise UserError(f"{json_path} is being written by a run still going (process {owner}): wait for it "
                            f"to end, or give this run another --out")
        except (ValueError, ProcessLookupError):
            pass  # a lock left by a run that was killed
    lock.write_text(str(os.getpid()))
    return lock


def train_one_seed(step, model_class, make_optimizer, args, data, device, seed, json_path, augmentation=None,
                   variant=None, test=evaluate, recipe_file=None):
    """Train one model; return the run's record (also written to `json_path`), the model and the last predictions
    on the evaluation set (test, or validation with --validation). A variant (tools/ablations.py) may give its
    `test` pass, `augmentation` as fn(epoch, epochs), and the file of its recipe."""
    train_x, train_y, eval_x, eval_y = data
    split = "validation" if getattr(args, "validation", False) else "test"
    generator = seed_everything(seed)
    model = model_class().to(device, memory_format=torch.channels_last)  # channels-last: 4x faster CPU pools
    rows = summarize(model)
    print(format_summary(rows))
    optimizer, scheduler = make_optimizer(model, args, math.ceil(len(train_x) / args.batch_size))
    augment = augmentation if callable(augmentation) else lambda epoch, epochs: augmentation
    record = dict(step=step, seed=seed, params=count_params(model), receptive_field=rows[-1]["rf"],
                  macs=sum(r["macs"] for r in rows), evaluated_on=split, training_images=len(train_x),
                  **provenance(step, model_class, device, variant or step[:5], recipe_file),
                  date=time.strftime("%Y-%m-%d %H:%M"), layers=rows,
                  settings=dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, subset=args.subset,
                                augmentation=augment(1, args.epochs)), status="running", epochs=[], seconds=0.0)
    save = lambda: write_atomically(json_path, json.dumps(record, indent=1, default=str))
    lock, start = claim_record(json_path), time.perf_counter()
    try:  # the JSON is written now, after every epoch and when training stops, however it stops
        save()
        for epoch in range(1, args.epochs + 1):
            lr = optimizer.param_groups[0]["lr"]
            stats = train_epoch(model, optimizer, scheduler, train_x, train_y, args.batch_size, generator,
                                augment(epoch, args.epochs), desc=f"epoch {epoch}/{args.epochs}")
            loss, accuracy, predictions = test(model, eval_x, eval_y)
            record["epochs"].append({"epoch": epoch, "lr": lr, **stats, f"{split}_loss": loss, f"{split}_acc": accuracy})
            record["seconds"] = time.perf_counter() - start
            tqdm.write(f"epoch {epoch:2d}/{args.epochs}  lr {lr:.4f}  train loss {stats['train_loss']:.4f} "
                       f"acc {stats['train_acc']:.2f}%  {split} loss {loss:.4f} acc {accuracy:.2f}%  "
                       f"({stats['train_seconds']:.1f} s)")
            save()
        record["status"] = "complete"
    except KeyboardInterrupt as stop:
        record["status"] = "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"
        raise
    except Diverged as error:
        record["status"], done = "diverged", len(record["epochs"])
        raise Diverged(f"{error} of epoch {done + 1}: training stopped. The {done} finished epochs "
                       f"are in {json_path}. Try a smaller --lr.") from None
    finally:
        save()
        lock.unlink(missing_ok=True)
    return record, model, predictions


def run_step(step, model_class, make_optimizer, args, augmentation=None):
    """What `python stepN_*.py` does: check, load, train, write."""
    device = pick_device(args.device)
    out = prepare_out_dir(args.out)
    data = load_mnist(args.data_dir, device, args.subset, args.validation)
    split = "validation" if args.validation else "test"
    print(f"{step}: {len(data[0]):,} training images, {len(data[2]):,} {split} images, device {device}")
    record, model, predictions = train_one_seed(step, model_class, make_optimizer, args, data, device,
                                                args.seed, out / f"{step}.json", augmentation)
    save_plots(out / step, record["epochs"], data[2], data[3], predictions, split)
    half, rf = receptive_field_figure(out / f"{step}_receptive_field.png", model, record["layers"], data[2])
    if args.save_model:  # read back by tools/robustness.py
        checkpoint = dict(step=step, state_dict=model.state_dict())
        write_atomically(out / f"{step}.pt", save=lambda f: torch.save(checkpoint, f))
    accuracies = [e[f"{split}_acc"] for e in record["epochs"]]
    print(f"{step}: {record['params']:,} parameters, final {split} accuracy {accuracies[-1]:.2f}% (best "
          f"{max(accuracies):.2f}%, {sum(a >= TARGET_ACC for a in accuracies)} epochs at ≥ {TARGET_ACC}%); the centre "
          f"unit of the last map weighs half its input within {half} x {half} px of its {rf} x {rf} px field. "
          f"Wrote {out / step}.json and its plots.")


class Terminated(KeyboardInterrupt):
    """SIGTERM (sent by `timeout`, job schedulers and notebook hosts), handled as Ctrl-C is."""


def main_guard(main):
    """Run a step's main: a UserError is one message and exit code 1; Ctrl-C exits 130, SIGTERM 143."""
    def terminate(signum, frame):
        raise Terminated()
    in_main_thread = threading.current_thread() is threading.main_thread()  # where signals are handled
    previous = signal.signal(signal.SIGTERM, terminate) if in_main_thread else None
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as stop:
        print(f"\n{'terminated' if isinstance(stop, Terminated) else 'interrupted'}: the epochs finished so far "
              "are in the run's JSON.", file=sys.stderr)
        sys.exit(143 if isinstance(stop, Terminated) else 130)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
