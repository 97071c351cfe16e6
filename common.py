"""What a step needs, top to bottom: settings, options, data, augmentation, receptive fields, training, one run."""
import argparse
import contextlib
import hashlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

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
    args = parser.parse_args(argv)  # bad values and an unavailable device are refused before any data is read
    for name, value in ((n, getattr(args, n)) for n in ("epochs", "batch_size", "lr", "subset")):
        if value is not None and not (value > 0 and math.isfinite(value)):
            parser.error(f"argument --{name.replace('_', '-')}: must be positive, got {value}")
    if (args.subset or 0) > (available := TRAIN_IMAGES - VALIDATION_IMAGES * args.validation):
        parser.error(f"argument --subset: {args.subset:,} is more than the {available:,} training images there are")
    if args.device in ("cuda", "mps") and pick_device() != torch.device(args.device):
        parser.error(f"--device {args.device}: no {args.device.upper()} device is available here")
    return args


def pick_device(name="auto"):
    if name == "auto":  # the first of CUDA, Apple's MPS, the CPU
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    return torch.device(name)


def load_mnist(data_dir, device, subset=None, validation=False):
    """Training and evaluation images (normalised, N x 1 x 28 x 28) and labels on `device`, downloaded if missing
    and checked (IDX headers, sizes). Evaluation: the test set; with `validation`, the last 10,000 training images."""
    if not all(Path(data_dir, "MNIST", "raw", name).exists() for name in MNIST_FILES):
        socket.setdefaulttimeout(15)  # fail in seconds, not minutes, without a network
        try:
            import torchvision  # only to download: importing it takes longer than one step's data
            torchvision.datasets.MNIST(data_dir, train=True, download=True)
            torchvision.datasets.MNIST(data_dir, train=False, download=True)
        except Exception as error:
            reason = (str(error).strip().splitlines() or [repr(error)])[-1].strip()  # its last line says why
            raise UserError(f"MNIST is not in {os.path.abspath(data_dir)} and could not be downloaded ({reason}).\n"
                            f"Point --data-dir (or the {DATA_DIR_ENV} environment variable) at a folder holding "
                            f"MNIST/raw/ with the files {', '.join(MNIST_FILES)}.") from None
    for name, (magic, shape) in MNIST_FILES.items():  # refuse a damaged file, naming it
        path = Path(data_dir, "MNIST", "raw", name)
        with open(path, "rb") as f:
            header = [int.from_bytes(f.read(4), "big") for _ in range(1 + len(shape))]
        size, expected_size = path.stat().st_size, 8 + 4 * (len(shape) - 1) + math.prod(shape)
        if header != [magic, *shape] or size != expected_size:
            raise UserError(f"{path} is truncated or corrupted: {size} bytes (expected {expected_size}), header "
                            f"{header} (expected {[magic, *shape]}). Delete it and download MNIST again.")
    raw = [torch.frombuffer(bytearray(Path(data_dir, "MNIST", "raw", name).read_bytes()), dtype=torch.uint8)
           [4 + 4 * len(shape):].view(shape) for name, (_, shape) in MNIST_FILES.items()]  # after the IDX header
    train_x, eval_x = (((x.float() / 255 - MNIST_MEAN) / MNIST_STD).unsqueeze(1) for x in raw[0::2])
    train_y, eval_y = (y.long() for y in raw[1::2])
    if validation:  # held out: never trained on; the test set is not used at all
        (train_x, eval_x), (train_y, eval_y) = ((t[:-VALIDATION_IMAGES], t[-VALIDATION_IMAGES:])
                                                for t in (train_x, train_y))
    return [t.to(device) for t in (train_x[:subset], train_y[:subset], eval_x, eval_y)]


def random_affine(n, augmentation, generator):
    """Per image, for `augmentation` = dict(degrees=..., zoom=..., shift=...): an angle, a zoom - 1
    and a shift (pixels, each axis) within +-each, on the CPU generator: the same on any device."""
    uniform = lambda *shape: torch.rand(*shape, generator=generator) * 2 - 1  # in [-1, 1]
    angles, zooms = uniform(n) * augmentation["degrees"], 1 + uniform(n) * augmentation.get("zoom", 0.0)
    return angles, zooms, uniform(n, 2) * augmentation.get("shift", 0.0)


def affine(images, angles, zooms=None, shifts=None):
    """Rotate each image by its own angle (degrees, counter-clockwise as RandomRotation), zoom it (>1 enlarges) and
    shift it (pixels, x then y: right and down), in one bilinear grid_sample for the batch, filling with background."""
    n, size = len(images), images.shape[-1]
    radians = angles.to(images.device, images.dtype) * (math.pi / 180)
    zooms = torch.ones_like(radians) if zooms is None else zooms.to(radians)
    shifts = torch.zeros(n, 2).to(radians) if shifts is None else shifts.to(radians) * (2 / size)
    # affine_grid maps output to input coordinates (the inverse): input = M (output - shift), M = rotation / zoom
    cos, sin = torch.cos(radians) / zooms, torch.sin(radians) / zooms
    matrix = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    offset = -(matrix @ shifts.unsqueeze(2))
    grid = F.affine_grid(torch.cat([matrix, offset], 2), list(images.shape), align_corners=False)
    # Sampling outside the image gives 0; shift values so that 0 is the background.
    return F.grid_sample(images - BACKGROUND, grid, mode="bilinear", align_corners=False) + BACKGROUND


def summarize(model, input_shape=(1, 1, 28, 28)):
    """Per leaf layer, as it runs on a blank image: shapes, kernel k, padding p, stride s (none: 1, 0, 1), parameters,
    multiply-adds, and before and after it the receptive field r, jump j (input pixels between units) and first unit's
    centre c. From r = j = 1, c = 0: c += ((k - 1) d / 2 - p) j, r += (k - 1) d j, j *= s (global pool: k = input)."""
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
        macs = output[0].numel() * weight[0].numel() if isinstance(weight, torch.Tensor) and weight.dim() == 4 else 0
        rows.append(dict(name=names[module], layer=type(module).__name__, input=tuple(inputs[0].shape[1:]),
                         shape=tuple(output.shape[1:]), kernel=kernel, padding=padding, stride=stride, **before,
                         jump=jump, rf=rf, start=start, params=count_params(module), macs=macs,
                         spatial=is_global or hasattr(module, "kernel_size")))
    names = {m: n for n, m in model.named_modules()}
    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    with torch.no_grad():  # in eval mode (training sets train mode): BatchNorm keeps its statistics
        model.eval()(torch.zeros(input_shape, device=next(model.parameters()).device))
    for handle in handles:
        handle.remove()
    return rows


def format_summary(rows):
    """The receptive-field table (markdown): a row per layer with a kernel, size-keeping layers after it folded in."""
    table, size = [], lambda shape: "x".join(map(str, shape))
    for r in rows:
        if r["spatial"] or not table:
            table.append(dict(r, ops=[r["layer"]]))
        else:  # a layer that keeps the size (BatchNorm, ReLU, dropout) joins the row before it
            table[-1].update(shape=r["shape"], params=table[-1]["params"] + r["params"],
                             ops=table[-1]["ops"] + [r["layer"]])
    lines = ["| layer | operation | input | kernel | padding | stride | output | jump in | jump out | RF in | RF out "
             "| params | MACs |", "|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['name']} | {' + '.join(r['ops'])} | {size(r['input'])} | {r['kernel']} | {r['padding']} | "
              f"{r['stride']} | {size(r['shape'])} | {r['jump_in']} | {r['jump']} | {r['rf_in']} | {r['rf']} | "
              f"{r['params']:,} | {r['macs']:,} |" for r in table]
    params, macs = sum(r["params"] for r in rows), sum(r["macs"] for r in rows)
    return "\n".join(lines + [f"\ntotal: {params:,} parameters, {macs:,} multiply-adds per image, receptive field "
                              f"{rows[-1]['rf']} px"])


def count_params(model):
    return sum(p.numel() for p in model.parameters())


class DropoutByGaps(nn.Dropout):
    """nn.Dropout that draws only the gaps between dropped units (geometric): p n random numbers, not n: faster."""
    def forward(self, x):
        if not self.training or self.p in (0, 1):  # nothing to draw
            return x * (1 - self.p) if self.training else x
        n, p = x.numel(), self.p
        count = math.ceil(n * p + 10 * math.sqrt(n * p) + 10)  # 10 standard deviations over the drops expected
        gaps = torch.log1p(-torch.rand(count, device=x.device)).div_(math.log1p(-p)).long() + 1  # P(> k) = (1-p)^k
        dropped = gaps.cumsum_(0).sub_(1).clamp_(max=n)  # past the end: a spare last unit
        mask = torch.full((n + 1,), 1 / (1 - p), device=x.device).index_fill_(0, dropped, 0)
        return x * mask[:n].as_strided(x.shape, torch.empty_like(x).stride())  # in x's memory layout


class BatchNorm2dBySums(nn.BatchNorm2d):
    """nn.BatchNorm2d that trains a channels-last batch, C not a multiple of 16, from plain sums down the columns of its
    pixels laid k to a row (k C floats: a multiple of 16): 2-3x faster on a CPU (make bench), same maths."""
    def forward(self, x):
        k = math.gcd(16 // math.gcd(16, self.num_features), x[:, 0].numel())  # pixels to a row
        if not (self.training and k > 1 and x.is_contiguous(memory_format=torch.channels_last)):
            return super().forward(x)
        self.num_batches_tracked.add_(1)
        return BatchNormBySums.apply(x, self.weight, self.bias, self, k)


class BatchNormBySums(torch.autograd.Function):
    """BatchNorm2dBySums' training pass, forward and backward; it updates the running statistics (affine, momentum)."""
    @staticmethod
    def forward(ctx, x, weight, bias, bn, k):
        ctx.rows = rows = lambda t: t.permute(0, 2, 3, 1).reshape(-1, k * len(weight))  # a view of channels-last t
        ctx.mean = mean_of = lambda sums, pixels=x.numel() // len(weight): sums.view(k, -1).sum(0) / pixels  # of x
        centred = rows(x) - (mean := mean_of(rows(x).sum(0))).repeat(k)
        invstd = torch.rsqrt((var := mean_of(centred.square().sum(0))) + bn.eps)
        ctx.save_for_backward(centred, weight, invstd)
        bn.running_mean.lerp_(mean, bn.momentum)  # as nn.BatchNorm2d: the running variance unbiased
        bn.running_var.lerp_(var * len(centred) * k / (len(centred) * k - 1), bn.momentum)
        y = torch.empty_like(x)  # channels-last like x, written through its rows: not a view
        torch.addcmul(bias.repeat(k), centred, (weight * invstd).repeat(k), out=rows(y))
        return y

    @staticmethod
    def backward(ctx, grad_y):
        centred, weight, invstd = ctx.saved_tensors
        grad, k, pixels = ctx.rows(grad_y), len(centred[0]) // len(weight), centred.numel() // len(weight)
        mean_grad, mean_grad_centred = ctx.mean(grad.sum(0)), ctx.mean((grad * centred).sum(0))
        scale = weight * invstd  # grad_x = scale (grad - mean(grad) - centred invstd^2 mean(grad centred))
        grad_x = torch.addcmul((-scale * mean_grad).repeat(k), centred,
                               (-scale * invstd**2 * mean_grad_centred).repeat(k)).addcmul_(grad, scale.repeat(k))
        grad_x = grad_x.view(grad_y.shape[0], *grad_y.shape[2:], -1).permute(0, 3, 1, 2)
        return grad_x, mean_grad_centred * invstd * pixels, mean_grad * pixels, None, None


class Diverged(UserError):
    status = "diverged"  # the training loss became NaN or infinite


def train_epoch(model, optimizer, scheduler, images, labels, batch_size, generator, augmentation=None,
                desc="train", refresh_every=50):
    """One pass over the training set in a fresh order, each digit warped (`affine`) if `augmentation` is given.
    Losses and counts stay on the device, read every `refresh_every` steps: a GPU seldom waits."""
    model.train()
    device, n = images.device, len(images)
    order = torch.randperm(n, generator=generator).to(device)
    if augmentation:  # all of the epoch's random draws at once: one copy to the device
        angles, zooms, shifts = (t.to(device) for t in random_affine(n, augmentation, generator))
    loss_sum, correct = torch.zeros((), device=device), torch.zeros((), dtype=torch.long, device=device)
    batches, start = order.split(batch_size), time.perf_counter()
    bar = tqdm(batches, desc=desc, unit="batch", leave=False, dynamic_ncols=True, disable=None)  # no terminal: none
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
                raise Diverged(f"the training loss became {float(loss_sum):g} by step {step + 1} of {desc}: "
                               "training stopped. Try a smaller --lr.")
            seen = min((step + 1) * batch_size, n)
            bar.set_postfix(loss=f"{float(loss_sum) / seen:.4f}", acc=f"{100 * int(correct) / seen:.2f}%")
    return dict(train_loss=float(loss_sum) / n, train_acc=100 * int(correct) / n,
                train_seconds=time.perf_counter() - start)


@torch.inference_mode()
def evaluate(model, images, labels, batch_size=500):
    """Test loss, accuracy (%) and predicted labels; batches of 500: twice as fast as 2,000 on a CPU."""
    model.eval()
    predictions = (logits := torch.cat([model(batch) for batch in images.split(batch_size)])).argmax(1)
    return F.cross_entropy(logits, labels).item(), 100 * (predictions == labels).float().mean().item(), predictions


def write_atomically(path, text=None, save=None):
    """Write `text` (or call `save(file)`): `path` is the old or the new file, never half; an OSError a UserError."""
    tmp = Path(path).with_name(f".{Path(path).name}.{os.getpid()}.{threading.get_ident()}.tmp")  # beside it
    try:
        with open(tmp, "wb") as f:
            (save or (lambda f: f.write(text.encode())))(f)
        os.replace(tmp, path)
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}") from None
    finally:  # a failed write's temporary file; none after os.replace
        tmp.unlink(missing_ok=True)


def provenance(step, model_class, device, variant, recipe_fingerprint=None):
    """What made a run: the commit (and whether its code differed); a SHA-256 fingerprint of the step's code with this
    file's, docstrings left out (they quote results); a variant's recipe fingerprint, else the step's constants; ..."""
    module = sys.modules.get(step) or sys.modules[model_class.__module__]
    files = [getattr(module, "__file__", None), globals().get("__file__")]  # one file when inlined (Colab)
    after_docstring = lambda path: Path(path).read_text().split('"""', 2)[-1]
    code = dict(code_fingerprint=hashlib.sha256("".join(map(after_docstring, dict.fromkeys(files))).encode())
                .hexdigest()[:12] if all(files) else None)  # a notebook's code has no files
    code.update(dict(recipe_fingerprint=recipe_fingerprint) if recipe_fingerprint else
                dict(constants={k: v for k, v in vars(module).items() if k.isupper() and type(v).__name__ != "module"}))
    git = ["git", "-C", str(Path(files[0] or ".").resolve().parent)]
    try:
        read = lambda *a: subprocess.run(git + [*a], capture_output=True, text=True, timeout=10, check=True).stdout
        changed = read("status", "--porcelain", "-uno", "--", ":/*.py", ":/Makefile", ":/requirements.txt")
        code.update(commit=read("rev-parse", "HEAD").strip(), uncommitted_changes=bool(changed))
    except (OSError, subprocess.SubprocessError):  # a copied step (Colab): no repository
        code.update(commit=None, uncommitted_changes=None, repository="none: not run from a git repository")
    cudnn = torch.backends.cudnn  # on CUDA, TF32 and determinism change the numbers
    code.update({} if device.type != "cuda" else dict(tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
        tf32_cudnn=cudnn.allow_tf32, cudnn_benchmark=cudnn.benchmark, cudnn_deterministic=cudnn.deterministic))
    return dict(**code, variant=variant, device=str(device), threads=torch.get_num_threads(), torch=torch.__version__)


def train_one_seed(step, model_class, make_optimizer, args, data, device, seed, json_path, augmentation=None,
                   variant=None, test=evaluate, recipe_fingerprint=None):
    """Train one model; return its record (also written to `json_path`), the model and its last evaluation predictions.
    A variant (tools/ablations.py) gives its `test` pass, `augmentation` as fn(epoch, epochs) and recipe fingerprint."""
    train_x, train_y, eval_x, eval_y = data
    split = "validation" if getattr(args, "validation", False) else "test"
    torch.manual_seed(seed)  # weights and dropout; the data order and augmentation draw on a CPU generator:
    generator = torch.Generator().manual_seed(seed)  # the same draws on any device
    model = model_class().to(device, memory_format=torch.channels_last)  # channels-last: 4x faster CPU pools
    print(format_summary(rows := summarize(model)))
    optimizer, scheduler = make_optimizer(model, args, math.ceil(len(train_x) / args.batch_size))
    augment = augmentation if callable(augmentation) else lambda epoch, epochs: augmentation
    record = dict(step=step, seed=seed, params=count_params(model), receptive_field=rows[-1]["rf"],
                  macs=sum(r["macs"] for r in rows), evaluated_on=split, training_images=len(train_x),
                  **provenance(step, model_class, device, variant or step[:5], recipe_fingerprint),
                  date=time.strftime("%Y-%m-%d %H:%M"), layers=rows,
                  settings=dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, subset=args.subset,
                                augmentation=augment(1, args.epochs)), status="running", epochs=[], seconds=0.0)
    save = lambda: write_atomically(json_path, json.dumps(record, indent=1, default=str))
    lock = Path(f"{json_path}.lock")  # refuse a record that a live process is writing; else lock it
    with contextlib.suppress(OSError, ValueError):  # no lock, or one left by a run that was killed
        os.kill(owner := int(lock.read_text()), 0)  # signal 0 only asks: raises if no such process
        raise UserError(f"{json_path} is being written by a run still going (process {owner}): wait for it to "
                        "end, or give this run another --out")
    try:  # the first write of a run, before any training: the folder is writable
        lock.parent.mkdir(parents=True, exist_ok=True)
        lock.write_text(str(os.getpid()))
    except OSError as error:
        raise UserError(f"cannot write to the output folder {lock.parent}: {error.strerror or error}. Choose "
                        "another with --out.") from None
    start = time.perf_counter()
    try:  # the JSON is written now, after every epoch and when training stops, however it stops
        save()
        for epoch in range(1, args.epochs + 1):
            lr = optimizer.param_groups[0]["lr"]
            stats = train_epoch(model, optimizer, scheduler, train_x, train_y, args.batch_size, generator,
                                augment(epoch, args.epochs), desc=f"epoch {epoch}/{args.epochs}")
            loss, acc, predictions = test(model, eval_x, eval_y)
            record["epochs"].append({"epoch": epoch, "lr": lr, **stats, f"{split}_loss": loss, f"{split}_acc": acc})
            record["seconds"] = time.perf_counter() - start
            tqdm.write(f"epoch {epoch:2d}/{args.epochs}  lr {lr:.4f}  train loss {stats['train_loss']:.4f} acc "
                       f"{stats['train_acc']:.2f}%  {split} loss {loss:.4f} acc {acc:.2f}%  "
                       f"({stats['train_seconds']:.1f} s)")
            save()
        record["status"] = "complete"
    except (KeyboardInterrupt, Diverged) as stop:
        record["status"] = getattr(stop, "status", "interrupted")  # Ctrl-C; SIGTERM and divergence say theirs
        raise
    finally:
        save()
        lock.unlink(missing_ok=True)
    return record, model, predictions


def run_step(step, model_class, make_optimizer, args, augmentation=None):
    """What `python stepN_*.py` does: check, load, train, write."""
    device, out, split = pick_device(args.device), Path(args.out), "validation" if args.validation else "test"
    data = load_mnist(args.data_dir, device, args.subset, args.validation)
    print(f"{step}: {len(data[0]):,} training images, {len(data[2]):,} {split} images, device {device}")
    record, model, _ = train_one_seed(step, model_class, make_optimizer, args, data, device, args.seed,
                                      out / f"{step}.json", augmentation)
    if args.save_model:  # read back by tools/robustness.py and tools/figures.py
        checkpoint = dict(step=step, state_dict=model.state_dict())
        write_atomically(out / f"{step}.pt", save=lambda f: torch.save(checkpoint, f))
    accuracies = [e[f"{split}_acc"] for e in record["epochs"]]
    print(f"{step}: {record['params']:,} parameters, final {split} accuracy {accuracies[-1]:.2f}% (best "
          f"{max(accuracies):.2f}%, {sum(a >= TARGET_ACC for a in accuracies)} epochs at ≥ {TARGET_ACC}%). "
          f"Wrote {out / step}.json; `python tools/figures.py` draws its curves.")
    return model


class Terminated(KeyboardInterrupt):
    status = "terminated (SIGTERM)"  # sent by `timeout`, job schedulers and notebook hosts: handled as Ctrl-C


def main_guard(main):
    """Run a step's main: a UserError is one message and exit code 1; Ctrl-C exits 130, SIGTERM 143."""
    def terminate(signum, frame):
        raise Terminated()
    if threading.current_thread() is threading.main_thread():  # signals are handled in the main thread only
        signal.signal(signal.SIGTERM, terminate)
    try:
        return main()
    except UserError as error:
        sys.exit(f"error: {error}")  # to stderr, exit code 1
    except KeyboardInterrupt as stop:
        print(f"\n{'terminated' if isinstance(stop, Terminated) else 'interrupted'}: the finished epochs are in "
              "the run's JSON.", file=sys.stderr)
        sys.exit(143 if isinstance(stop, Terminated) else 130)
