"""make bench: where step 3's training time goes, and how fast it trains. Writes results/bench.md.

1. A profile of step-3 training steps (forward, backward, SGD step, on augmented batches of
   real digits): the operations that take the most CPU time, with their share.
2. One epoch of step 3 as a user runs it, `python step3_aug_sched.py --epochs 1` in a new
   process (start, data, summary, training, test pass; 607dc3a also draws the curves), for this
   tree and for `--base COMMIT` (a git worktree), alternating, best of 3: the end-to-end ratio.
3. One training epoch in process, alternating, best of 3: (a) the bare compute (forward,
   backward, step on batches augmented beforehand) and (b) common.train_epoch, the steps'
   loop (augmentation on the fly, metrics, progress); and the test pass over 10,000 images.

`--variants step3 no-dropout ...` instead times (b) for each variant of tools/ablations.py,
alternating, best of 3, and writes results/bench_variants.md.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import ablations  # noqa: E402
import common  # noqa: E402
import step3_aug_sched as step3  # noqa: E402

PROFILE_STEPS = 20
TOP_OPERATIONS = 10


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def fresh_model(device, batches_per_epoch, recipe=ablations.STEP3):
    torch.manual_seed(0)
    model = recipe.net().to(device, memory_format=torch.channels_last)  # as common.train_one_seed
    settings = SimpleNamespace(lr=step3.SETTINGS["lr"], epochs=2)  # the schedule never runs out here
    return (model, *recipe.make_optimizer(model, settings, batches_per_epoch))


def training_step(model, optimizer, scheduler, x, y):
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()


def augmented_batches(images, labels, batch_size, count=None):
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(images), generator=generator).to(images.device)[:count and count * batch_size]
    draws = common.random_affine(len(images), step3.AUGMENTATION, generator)
    angles, zooms, shifts = (t.to(images.device) for t in draws)
    return [(common.affine(images[b], angles[b], zooms[b], shifts[b]), labels[b]) for b in order.split(batch_size)]


def profile_steps(data, device, batch_size):
    """[(operation, share of self CPU time)] over PROFILE_STEPS training steps, after 5 to warm up."""
    batches = augmented_batches(data[0], data[1], batch_size, PROFILE_STEPS + 5)
    model, optimizer, scheduler = fresh_model(device, len(batches))
    for x, y in batches[:5]:
        training_step(model, optimizer, scheduler, x, y)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for x, y in batches[5:]:
            training_step(model, optimizer, scheduler, x, y)
        synchronize(device)
    events = [e for e in profiler.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: -e.self_cpu_time_total)
    return [(e.key, e.self_cpu_time_total / total) for e in events[:TOP_OPERATIONS]], total / 1e6 / PROFILE_STEPS


def time_compute_only(data, device, batch_size):
    """(a): the batches are sliced and augmented before the clock starts."""
    batches = augmented_batches(data[0], data[1], batch_size)
    model, optimizer, scheduler = fresh_model(device, len(batches))
    for x, y in batches[:5]:  # warm-up
        training_step(model, optimizer, scheduler, x, y)
    synchronize(device)
    start = time.perf_counter()
    for x, y in batches:
        training_step(model, optimizer, scheduler, x, y)
    synchronize(device)
    return time.perf_counter() - start


def time_our_epoch(data, device, batch_size, variant="step3"):
    """(b): one call of common.train_epoch, the loop the steps use (of the first epoch)."""
    images, labels, recipe = data[0], data[1], ablations.VARIANTS[variant]
    model, optimizer, scheduler = fresh_model(device, math.ceil(len(images) / batch_size), recipe)
    augmentation = recipe.augmentation(1, 2) if callable(recipe.augmentation) else recipe.augmentation
    warm = 20 * batch_size
    common.train_epoch(model, optimizer, scheduler, images[:warm], labels[:warm], batch_size,
                       torch.Generator().manual_seed(1), augmentation, desc="warm-up")
    synchronize(device)
    start = time.perf_counter()
    common.train_epoch(model, optimizer, scheduler, images, labels, batch_size,
                       torch.Generator().manual_seed(0), augmentation, desc="(b) our epoch")
    synchronize(device)
    return time.perf_counter() - start


def time_test_pass(data, device, batch_size=500):
    model = fresh_model(device, 1)[0]
    common.evaluate(model, data[2][:1000], data[3][:1000], batch_size)  # warm-up
    synchronize(device)
    start = time.perf_counter()
    common.evaluate(model, data[2], data[3], batch_size)
    synchronize(device)
    return time.perf_counter() - start


def time_as_a_user_runs_it(trees, args):
    """{tree: (wall seconds, training seconds), each the fastest of `python step3_aug_sched.py --epochs 1`}, the trees
    alternating."""
    times = {tree: [] for tree in trees}
    for _ in range(args.repeats):
        for tree in trees:
            with tempfile.TemporaryDirectory() as out:
                command = [sys.executable, "step3_aug_sched.py", "--epochs", "1", "--out", out,
                           "--data-dir", str(Path(args.data_dir).resolve()), "--device", args.device,
                           *(["--subset", str(args.subset)] if args.subset else [])]
                start = time.perf_counter()
                subprocess.run(command, cwd=tree, check=True, capture_output=True)
                wall = time.perf_counter() - start
                epoch = json.loads(Path(out, "step3_aug_sched.json").read_text())["epochs"][0]["train_seconds"]
                times[tree].append((wall, epoch))
            print(f"{tree}: {wall:.1f} s end to end ({epoch:.1f} s training)", flush=True)
    return {tree: (min(wall for wall, _ in runs), min(epoch for _, epoch in runs)) for tree, runs in times.items()}


def with_worktree(commit, work):
    """Run work(folder) with `commit` checked out in a temporary git worktree."""
    folder = tempfile.mkdtemp(prefix="bench-base-")
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", folder, commit], check=True,
                   capture_output=True)
    try:
        return work(folder)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", folder], capture_output=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get(common.DATA_DIR_ENV, "data"),
                        help="folder holding MNIST/raw/*-ubyte")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto",
                        help="where to run; auto picks cuda, then mps, then cpu")
    parser.add_argument("--base", help="a commit to time end to end against this tree (git worktree)")
    parser.add_argument("--out", default="results", help="folder for bench.md")
    parser.add_argument("--repeats", type=int, default=3, help="timings of each kind; the best is kept")
    parser.add_argument("--subset", type=int, help="time epochs of the first N training images only (a quick check)")
    parser.add_argument("--variants", nargs="+", choices=ablations.VARIANTS, metavar="VARIANT",
                        help="only time our epoch for each of these variants of step 3, alternating")
    args = parser.parse_args(argv)
    device = common.pick_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = common.load_mnist(args.data_dir, device, args.subset)
    batch_size, n = step3.SETTINGS["batch_size"], len(data[0])
    setup = f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}" + (
        f"; epochs of the first {n:,} training images only (`--subset`)" if args.subset else "")
    if args.variants:
        times = {name: [] for name in args.variants}
        for _ in range(args.repeats):
            for name in args.variants:
                times[name].append(time_our_epoch(data, device, batch_size, name))
                print(f"{name}: {times[name][-1]:.2f} s", flush=True)
        best = {name: min(seconds) for name, seconds in times.items()}
        first = best[args.variants[0]]
        lines = [f"# One epoch of step 3, variants side by side (batch {batch_size})", "",
                 f"Best of {args.repeats} epochs of {n:,} images each, the variants alternating in one run; {setup}; "
                 f"`python tools/bench.py --variants {' '.join(args.variants)}`.", "",
                 f"| variant | seconds | images/s | × {args.variants[0]} |", "|---|---:|---:|---:|"]
        lines += [f"| {name} | {s:.2f} | {n / s:,.0f} | {s / first:.2f} |" for name, s in best.items()]
        common.write_atomically(out / "bench_variants.md", "\n".join(lines) + "\n")
        print("\n".join(lines))
        return

    operations, step_seconds = profile_steps(data, device, batch_size)
    lines = [f"# Training speed, step 3 ({common.count_params(step3.Net()):,} parameters, batch {batch_size})", "",
             f"{setup}; `make bench`.", "", f"## Where a training step's time goes", "",
             f"`torch.profiler` over {PROFILE_STEPS} training steps on augmented batches (forward, backward, "
             f"SGD step): {1000 * step_seconds:.1f} ms of CPU time per step under the profiler; the "
             f"{TOP_OPERATIONS} operations with the most self time.", "",
             "| operation | share |", "|---|---:|"]
    lines += [f"| `{name}` | {100 * share:.1f}% |" for name, share in operations]
    if args.base:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.base], check=True,
                                capture_output=True, text=True).stdout.strip()
        best = with_worktree(args.base, lambda base: time_as_a_user_runs_it([str(ROOT), base], args))
        base_wall, base_training = best[list(best)[1]]
        lines += ["", "## One epoch as a user runs it", "",
                  f"`python step3_aug_sched.py --epochs 1` in a new process, this tree and commit {commit} "
                  f"alternating, best of {args.repeats} (start, data, summary, training, test pass; the base's "
                  "also its curves); "
                  "*training*: the training epoch, as the run's JSON records it (best of the same runs).", "",
                  "| version | end to end, s | × base | training, s | × base |", "|---|---:|---:|---:|---:|"]
        for version, (wall, training) in zip(("this tree", commit), best.values()):
            lines.append(f"| {version} | {wall:.1f} | {wall / base_wall:.2f} | {training:.1f} | "
                         f"{training / base_training:.2f} |")
    times_a, times_b, times_test, times_test_2000 = [], [], [], []
    for _ in range(args.repeats):
        times_a.append(time_compute_only(data, device, batch_size))
        times_b.append(time_our_epoch(data, device, batch_size))
        times_test.append(time_test_pass(data, device))
        times_test_2000.append(time_test_pass(data, device, 2000))
        print(f"(a) {times_a[-1]:.2f} s, (b) {times_b[-1]:.2f} s, test pass {times_test[-1]:.2f} s "
              f"({times_test_2000[-1]:.2f} s in batches of 2,000)", flush=True)
    rows = [("(a) compute only: forward, backward, step on batches augmented beforehand", min(times_a), n),
            ("(b) our epoch: common.train_epoch (augmentation, metrics, progress)", min(times_b), n),
            ("the test pass: common.evaluate on the 10,000 test digits, batches of 500", min(times_test), len(data[2])),
            ("the same in batches of 2,000", min(times_test_2000), len(data[2]))]
    lines += ["", "## In process", "", f"Best of {args.repeats}, alternating.", "",
              "| what | seconds | images/s |", "|---|---:|---:|"]
    lines += [f"| {name} | {seconds:.2f} | {count / seconds:,.0f} |" for name, seconds, count in rows]
    text = "\n".join(lines) + "\n"
    common.write_atomically(out / "bench.md", text)
    print("\n" + text)


if __name__ == "__main__":
    common.main_guard(main)
