"""make bench: how fast step 3 trains, and where the time goes. Writes results/bench.md.

One epoch each, same model, optimiser, schedule and batch size (step 3's):
  (a) compute only: forward + backward + optimiser step on batches made beforehand;
  (b) our epoch: common.train_epoch (in-memory data, batched augmentation, metrics, progress);
  (c) the classic pipeline: torchvision MNIST + RandomAffine + ToTensor + Normalize
      through DataLoader(num_workers=2, shuffle=True);
and (b) again with channels-last memory and with torch.compile, to decide whether to adopt them.

`--variants step3 blur-second-only ...` instead times (b) for step 3 with each change of
tools/ablations.py, alternating between them, best of 3: the side-by-side epoch time that
a change of model must not make worse. It writes results/bench_variants.md.
"""
import argparse
import math
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
import torchvision
from tqdm import tqdm
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ablations  # noqa: E402
import common  # noqa: E402
import step3_aug_sched as step3  # noqa: E402


REPEATS = 3


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def fresh_model(device, batches_per_epoch, channels_last=False, compile_model=False):
    common.seed_everything(0)
    model = step3.Net().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    settings = SimpleNamespace(lr=step3.SETTINGS["lr"], epochs=2)  # schedule never runs out here
    optimizer, scheduler = step3.make_optimizer(model, settings, batches_per_epoch)
    return (torch.compile(model) if compile_model else model), optimizer, scheduler


def training_step(model, optimizer, scheduler, x, y):
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()


def time_compute_only(data, device, batch_size):
    """(a): the batches are sliced and rotated before the clock starts."""
    images, labels = data[0], data[1]
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(images), generator=generator).to(device)
    angles, zooms, shifts = (t.to(device) for t in common.random_affine(len(images), step3.AUGMENTATION, generator))
    batches = [(common.affine(images[b], angles[b], zooms[b], shifts[b]), labels[b]) for b in order.split(batch_size)]
    model, optimizer, scheduler = fresh_model(device, len(batches))
    for x, y in batches[:5]:  # warm-up
        training_step(model, optimizer, scheduler, x, y)
    synchronize(device)
    start = time.perf_counter()
    for x, y in batches:
        training_step(model, optimizer, scheduler, x, y)
    synchronize(device)
    return time.perf_counter() - start


def time_variants(variants, data, device, batch_size):
    """(b) for step 3 as each variant makes it: {variant: best of REPEATS seconds}, alternating."""
    times = {name: [] for name in variants}
    for _ in range(REPEATS):
        for name in variants:
            with ablations.applied(name):
                times[name].append(time_our_epoch(data, device, batch_size))
            print(f"{name}: {times[name][-1]:.2f} s", flush=True)
    return {name: min(seconds) for name, seconds in times.items()}


def time_our_epoch(data, device, batch_size, channels_last=False, compile_model=False):
    """(b): one call of common.train_epoch, the loop the steps use."""
    images, labels = data[0], data[1]
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    steps = math.ceil(len(images) / batch_size)
    model, optimizer, scheduler = fresh_model(device, steps, channels_last, compile_model)
    # Warm up on a slice that ends in a batch of the epoch's last, smaller size, so that
    # torch.compile has compiled for both batch shapes before the clock starts.
    warm = 20 * batch_size + len(images) % batch_size
    common.train_epoch(model, optimizer, scheduler, images[:warm], labels[:warm], batch_size,
                       torch.Generator().manual_seed(1), step3.AUGMENTATION, desc="warm-up")
    synchronize(device)
    start = time.perf_counter()
    common.train_epoch(model, optimizer, scheduler, images, labels, batch_size,
                       torch.Generator().manual_seed(0), step3.AUGMENTATION, desc="(b) our epoch")
    synchronize(device)
    return time.perf_counter() - start


def time_classic_epoch(data_dir, device, batch_size):
    """(c): per-image PIL transforms in two worker processes."""
    aug = step3.AUGMENTATION
    transform = transforms.Compose([transforms.RandomAffine(aug["degrees"], translate=(aug["shift"] / 28,) * 2,
                                                            scale=(1 - aug["zoom"], 1 + aug["zoom"]), fill=0),
                                    transforms.ToTensor(),
                                    transforms.Normalize((common.MNIST_MEAN,), (common.MNIST_STD,))])
    dataset = torchvision.datasets.MNIST(data_dir, train=True, transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=2,
                                         pin_memory=device.type == "cuda", persistent_workers=False)
    model, optimizer, scheduler = fresh_model(device, len(loader))
    model.train()
    start = time.perf_counter()
    for x, y in tqdm(loader, desc="(c) classic", leave=False, disable=None):
        training_step(model, optimizer, scheduler, x.to(device, non_blocking=True), y.to(device, non_blocking=True))
    synchronize(device)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get(common.DATA_DIR_ENV, "data"),
                        help="folder holding MNIST/raw/*-ubyte")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto",
                        help="where to run; auto picks cuda, then mps, then cpu")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile row (slow to compile)")
    parser.add_argument("--out", default="results", help="folder for bench.md")
    parser.add_argument("--variants", nargs="+", choices=ablations.VARIANTS, metavar="VARIANT",
                        help="only time our epoch for each of these variants of step 3, side by side")
    args = parser.parse_args()
    device = common.pick_device(args.device)
    out = common.prepare_out_dir(args.out)
    data = common.load_mnist(args.data_dir, device)
    batch_size = step3.SETTINGS["batch_size"]
    n = len(data[0])
    if args.variants:
        best = time_variants(args.variants, data, device, batch_size)
        first = best[args.variants[0]]
        lines = [f"# One epoch of step 3, variants side by side (batch {batch_size})", "",
                 f"Best of {REPEATS} epochs of {n:,} images each, the variants alternating in one run; device "
                 f"{device}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
                 f"`python tools/bench.py --variants {' '.join(args.variants)}`.", "",
                 f"| variant | seconds | images/s | × {args.variants[0]} |", "|---|---:|---:|---:|"]
        lines += [f"| {name} | {seconds:.2f} | {n / seconds:,.0f} | {seconds / first:.2f} |" for name, seconds in best.items()]
        common.write_atomically(out / "bench_variants.md", "\n".join(lines) + "\n")
        print("\n".join(lines))
        return

    # (a) and (b) are close, and one epoch's time varies by a few percent from run to run:
    # take the best of REPEATS runs of each, alternating.
    times_a, times_b = [], []
    for _ in range(REPEATS):
        times_a.append(time_compute_only(data, device, batch_size))
        times_b.append(time_our_epoch(data, device, batch_size))
        print(f"(a) {times_a[-1]:.2f} s, (b) {times_b[-1]:.2f} s", flush=True)
    rows = [(f"(a) compute only: forward, backward, step (best of {REPEATS})", min(times_a)),
            (f"(b) our epoch: in-memory, batched augmentation, metrics (best of {REPEATS})", min(times_b))]
    rows.append(("(c) classic: DataLoader, 2 workers, PIL RandomAffine", time_classic_epoch(args.data_dir, device, batch_size)))
    print(f"{rows[-1][0]}: {rows[-1][1]:.1f} s", flush=True)
    rows.append(("(b) with channels-last", time_our_epoch(data, device, batch_size, channels_last=True)))
    print(f"{rows[-1][0]}: {rows[-1][1]:.1f} s", flush=True)
    if not args.no_compile:
        try:
            rows.append(("(b) with torch.compile", time_our_epoch(data, device, batch_size, compile_model=True)))
        except Exception as error:  # a missing compiler must not cost the other rows
            print(f"torch.compile failed: {str(error).splitlines()[0]}", file=sys.stderr)
        else:
            print(f"{rows[-1][0]}: {rows[-1][1]:.1f} s", flush=True)

    a, b, c = rows[0][1], rows[1][1], rows[2][1]
    lines = [f"# Training speed, step 3 ({common.count_params(step3.Net()):,} parameters, batch {batch_size})", "",
             f"One epoch of {n:,} images each; device {device}, {torch.get_num_threads()} threads, "
             f"torch {torch.__version__}; `make bench`.", "",
             "| pipeline | seconds | images/s | × (a) |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {seconds:.2f} | {n / seconds:,.0f} | {seconds / a:.2f} |" for name, seconds in rows]
    lines += ["", f"- (b) / (a) = {b / a:.3f} (target ≤ 1.05): {'met' if b / a <= 1.05 else 'MISSED'}",
              f"- (c) / (b) = {c / b:.2f} (target ≥ 1.5): {'met' if c / b >= 1.5 else 'MISSED'}"]
    text = "\n".join(lines) + "\n"
    common.write_atomically(out / "bench.md", text)
    print("\n" + text)


if __name__ == "__main__":
    common.main_guard(main)
