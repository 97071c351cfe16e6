"""What a step needs to train and report one run, read top to bottom: settings, options, data, augmentation,
model summary, training, outputs (files, plots), one run (`run_step`, which each step's `main` calls)."""
import argparse
import hashlib
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
import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F
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


def load_mnist(data_dir, device, subset=None):
    """Train and test images (normalised, N x 1 x 28 x 28) and labels on `device`; downloaded if missing."""
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
    tensors = []
    for (name, (_, shape)), count in zip(MNIST_FILES.items(), (subset, subset, None, None)):  # all test images
        raw = torch.frombuffer(bytearray(Path(data_dir, "MNIST", "raw", name).read_bytes()), dtype=torch.uint8)
        values = raw[4 + 4 * len(shape):].view(shape)[:count]  # after the IDX header, checked above
        tensors.append(((values.float() / 255 - MNIST_MEAN) / MNIST_STD).unsqueeze(1) if len(shape) == 3
                       else values.long())
    return [t.to(device) for t in tensors]


def random_affine(n, augmentation, generator):
    """Per image, for `augmentation` = dict(degrees=..., zoom=..., shift=...): an angle, a zoom - 1
    and a shift (pixels, each axis) within +-each, on the CPU generator: the same on any device."""
    uniform = lambda *shape: torch.rand(*shape, generator=generator) * 2 - 1  # in [-1, 1]
    angles, zooms = uniform(n) * augmentation["degrees"], 1 + uniform(n) * augmentation.get("zoom", 0.0)
    return angles, zooms, uniform(n, 2) * augmentation.get("shift", 0.0)


def affine(images, angles, zooms=None, shifts=None, displacement=None):
    """Rotate each image by its own angle (degrees, counter-clockwise as RandomRotation), zoom it (>1 enlarges)
    and shift it (pixels, x then y: right and down), in one bilinear grid_sample for the batch, filling with
    the background. `displacement` (N x H x W x 2, pixels) moves where each output pixel is sampled from."""
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
    """Run one blank image through `model` and record, per leaf layer in the order it runs, its output shape,
    parameters, multiply-adds, receptive field r and jump j (input pixels between neighbouring outputs). Both
    start at 1; kernel k, stride s, dilation d give r += (k - 1) * d * j and j *= s; a global pool sees it all."""
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
                module.weight.numel() if isinstance(module, nn.Linear) else
                output[0].numel() * kernel * kernel if isinstance(module, nn.AvgPool2d) else 0)  # a weighted sum
        rows.append(dict(name=names[module], layer=type(module).__name__, shape=tuple(output.shape[1:]),
                         params=count_params(module), macs=macs, rf=rf, jump=jump))

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
                augmentation=None, warp=affine, desc="train", refresh_every=50):
    """One pass over the training set in a fresh order, augmenting with `warp` when `augmentation` is given.
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
            x = warp(x, angles[batch], zooms[batch], shifts[batch])
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


def save_plots(prefix, history, test_images, test_labels, predictions):
    """<prefix>_curves.png, _misclassified.png and _confusion.png."""
    epochs = [e["epoch"] for e in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_acc.axhline(TARGET_ACC, color="gray", linestyle="--", label=f"{TARGET_ACC}%")
    for ax, metric in ((ax_loss, "loss"), (ax_acc, "acc")):
        for split in ("train", "test"):
            ax.plot(epochs, [e[f"{split}_{metric}"] for e in history], "o-", label=split)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log", title="loss")
    # Scale to the second half of training, where 99.x is decided; the loss panel shows the start.
    late = [e[key] for e in history[len(history) // 2:] for key in ("train_acc", "test_acc")]
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy (second half scaled)",
               ylim=(max(90, min(min(late), TARGET_ACC) - 0.3), 100))
    save_figure(fig, f"{prefix}_curves.png")

    images, labels, preds = test_images.cpu(), test_labels.cpu(), predictions.cpu()
    wrong = (preds != labels).nonzero().flatten()
    fig, axes = plt.subplots(4, 10, figsize=(10, 4.6), subplot_kw=dict(xticks=[], yticks=[], frame_on=False))
    for ax, i in zip(axes.flat, wrong[:40]):
        ax.imshow(images[i, 0], cmap="gray_r")
        ax.set_title(f"{labels[i]}→{preds[i]}", fontsize=9, color="crimson")
    fig.suptitle(f"misclassified test digits (true→predicted): first {len(wrong[:40])} of {len(wrong)}")
    save_figure(fig, f"{prefix}_misclassified.png")

    confusion = torch.bincount(labels * 10 + preds, minlength=100).view(10, 10)  # row: true, column: predicted
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(confusion - torch.diag(confusion.diagonal()), cmap="Reds")  # colour the errors
    for t, p in confusion.nonzero().tolist():  # the counts, zeros left blank
        ax.text(p, t, confusion[t, p].item(), ha="center", va="center", fontsize=7, color="black" if t != p else "gray")
    ax.set(xlabel="predicted", ylabel="true", xticks=range(10), yticks=range(10),
           title="confusion matrix (colour: errors only)")
    save_figure(fig, f"{prefix}_confusion.png")


def provenance(step, model_class, device, variant):
    """What made a run: the commit (and whether its code, not its outputs, differed), the variant (whose
    code is at that commit), the step's constants, threads, device, torch; on CUDA TF32 and determinism."""
    module = sys.modules[model_class.__module__]
    constants = {k: v for k, v in vars(sys.modules.get(step) or module).items() if k.isupper()}
    git = ["git", "-C", str(Path(getattr(module, "__file__", ".")).resolve().parent)]
    try:
        read = lambda *a: subprocess.run(git + [*a], capture_output=True, text=True, timeout=10, check=True).stdout
        changed = read("status", "--porcelain", "-uno", "--", ":/*.py", ":/Makefile", ":/requirements.txt")
        code = dict(commit=read("rev-parse", "HEAD").strip(), uncommitted_changes=bool(changed))
    except (OSError, subprocess.SubprocessError):  # a copied step (Colab): no repository
        code = dict(commit=None, uncommitted_changes=None, repository="none: not run from a git repository")
    cudnn = torch.backends.cudnn  # on CUDA, TF32 and determinism change the numbers
    cuda = {} if device.type != "cuda" else dict(tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
        tf32_cudnn=cudnn.allow_tf32, cudnn_benchmark=cudnn.benchmark, cudnn_deterministic=cudnn.deterministic)
    return dict(**code, variant=variant, constants=constants, device=str(device), threads=torch.get_num_threads(),
                torch=torch.__version__, **cuda)


def train_one_seed(step, model_class, make_optimizer, args, data, device, seed, json_path,
                   augmentation=None, variant=None, warp=affine, test=evaluate):
    """Train one model; return the run's record (also written to `json_path`), the model and the last test
    predictions. A variant (tools/ablations.py) may give its `warp`, `test`, and `augmentation` as fn(epoch, epochs)."""
    train_x, train_y, test_x, test_y = data
    generator = seed_everything(seed)
    model = model_class().to(device, memory_format=torch.channels_last)  # channels-last: 4x faster CPU pools
    rows = summarize(model)
    print(format_summary(rows))
    optimizer, scheduler = make_optimizer(model, args, math.ceil(len(train_x) / args.batch_size))
    augment = augmentation if callable(augmentation) else lambda epoch, epochs: augmentation
    record = dict(step=step, seed=seed, params=count_params(model), receptive_field=rows[-1]["rf"],
                  macs=sum(r["macs"] for r in rows), **provenance(step, model_class, device, variant or step[:5]),
                  date=time.strftime("%Y-%m-%d %H:%M"),
                  settings=dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, subset=args.subset,
                                augmentation=augment(1, args.epochs)), status="running", epochs=[], seconds=0.0)
    start = time.perf_counter()
    try:  # the JSON is written now, after every epoch and when training stops, however it stops
        write_atomically(json_path, json.dumps(record, indent=1, default=str))
        for epoch in range(1, args.epochs + 1):
            lr = optimizer.param_groups[0]["lr"]
            stats = train_epoch(model, optimizer, scheduler, train_x, train_y, args.batch_size, generator,
                                augment(epoch, args.epochs), warp, desc=f"epoch {epoch}/{args.epochs}")
            test_loss, test_acc, predictions = test(model, test_x, test_y)
            record["epochs"].append(dict(epoch=epoch, lr=lr, **stats, test_loss=test_loss, test_acc=test_acc))
            record["seconds"] = time.perf_counter() - start
            tqdm.write(f"epoch {epoch:2d}/{args.epochs}  lr {lr:.4f}  train loss {stats['train_loss']:.4f} "
                       f"acc {stats['train_acc']:.2f}%  test loss {test_loss:.4f} acc {test_acc:.2f}%  "
                       f"({stats['train_seconds']:.1f} s)")
            write_atomically(json_path, json.dumps(record, indent=1, default=str))
        record["status"] = "complete"
    except KeyboardInterrupt as stop:
        record["status"] = "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"
        raise
    except Diverged as error:
        record["status"], done = "diverged", len(record["epochs"])
        raise Diverged(f"{error} of epoch {done + 1}: training stopped. The {done} finished epochs "
                       f"are in {json_path}. Try a smaller --lr.") from None
    finally:
        write_atomically(json_path, json.dumps(record, indent=1, default=str))
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
        checkpoint = dict(step=step, state_dict=model.state_dict())
        write_atomically(out / f"{step}.pt", save=lambda f: torch.save(checkpoint, f))
    accuracies = [e["test_acc"] for e in record["epochs"]]
    print(f"{step}: {record['params']:,} parameters, final test accuracy {accuracies[-1]:.2f}% (best "
          f"{max(accuracies):.2f}%, {sum(a >= TARGET_ACC for a in accuracies)} epochs at ≥ {TARGET_ACC}%). "
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
