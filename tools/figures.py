"""Each step's curves, from its run's record, and what it sees and gets wrong, from its saved weights (`make all`
saves them):

    python tools/figures.py            # results/<step>_curves.png, _receptive_field.png and _misclassified.png

The receptive field: the centre unit of the last map that still has a size (the one the global average
or the output layer reads), its theoretical field (from the summary's table) as a square over a test
digit, and beside it its effective field, the mean |gradient| of that unit with respect to the input
over 100 test digits: how much of the digit the unit covers, and how little of its square it weighs.
The notebooks (`make colab`) carry these functions and draw the figures after training.
"""
import argparse
import importlib
import json
import math
import os
import sys
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402

STEPS = ["step1_skeleton", "step2_bn_gap", "step3_aug_sched"]


def load_checkpoint(path, step, model):
    """Load weights written by --save-model into `model`; a clear error for anything else."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise common.UserError(f"checkpoint {path} does not exist") from None
    except Exception as error:
        raise common.UserError(f"checkpoint {path} is corrupted or not a checkpoint: {error}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise common.UserError(f"checkpoint {path} is not one written by --save-model")
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        lines = str(error).splitlines()
        raise common.UserError(f"checkpoint {path} (from {checkpoint.get('step')}) does not fit {step}'s "
                               f"Net: {lines[1].strip() if len(lines) > 1 else error}") from None
    return model


def receptive_field_figure(path, model, rows, images, count=100):
    """The centre unit of the last map with a size (its channels summed): its theoretical receptive field, a square
    over a digit, and its effective one, the mean |gradient| of the unit with respect to the input over `count`
    digits. Returns the side of the smallest centred square holding half of that gradient, and the field's side."""
    reader = next(r for r in rows if len(r["input"]) == 3 and r["input"][-1] > 1 and math.prod(r["shape"][1:]) == 1)
    maps = []
    hook = dict(model.named_modules())[reader["name"]].register_forward_hook(lambda m, i, o: maps.append(i[0]))
    x = images[:count].clone().requires_grad_()
    model.eval()(x)
    hook.remove()
    unit, side = maps[0].shape[-1] // 2, x.shape[-1]
    gradient = torch.autograd.grad(maps[0][:, :, unit, unit].sum(), x)[0].abs().mean(0)[0].cpu()
    rf, centre = reader["rf_in"], reader["start_in"] + unit * reader["jump_in"]  # in input pixels
    distance = (torch.arange(side) - centre).abs()
    distance = torch.maximum(distance[:, None], distance[None, :])  # from the centre, along either axis
    half = next(2 * d + 1 for d in range(side) if gradient[distance <= d].sum() >= gradient.sum() / 2)
    low, high = min(centre - rf / 2, -0.5) - 1, max(centre + rf / 2, side - 0.5) + 1
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.6))
    titles = (f"theoretical receptive field: {rf} x {rf} px",
              f"effective: mean |gradient| over {len(x)} digits;\nhalf of it within the central {half} x {half} px")
    for ax, picture, cmap, title in zip(axes, (images[0, 0].cpu().numpy(), gradient.numpy()), ("gray_r", "magma"),
                                        titles):
        ax.imshow(picture, cmap=cmap)
        for corner, size, style in ((-0.5, side, ":"), (centre - rf / 2, rf, "-")):  # the digit, the field
            ax.add_patch(plt.Rectangle((corner, corner), size, size, fill=False, color="crimson", ls=style, lw=2))
        ax.set(xlim=(low, high), ylim=(high, low), xticks=[], yticks=[], title=title)
    fig.suptitle(f"the centre unit of {reader['name']}'s input ({'x'.join(map(str, reader['input']))}), "
                 f"over the {side} x {side} digit (dotted)")
    save_figure(fig, path)
    return half, rf


def misclassified_figure(path, model, images, labels, count=40):
    """The first `count` test digits the model gets wrong, each titled true→predicted."""
    predictions = common.evaluate(model, images, labels)[2].tolist()
    wrong = [i for i, (label, guess) in enumerate(zip(labels.tolist(), predictions)) if label != guess]
    fig, axes = plt.subplots(4, 10, figsize=(10, 4.6), subplot_kw=dict(xticks=[], yticks=[], frame_on=False))
    for ax, i in zip(axes.flat, wrong[:count]):
        ax.imshow(images[i, 0].cpu().numpy(), cmap="gray_r")
        ax.set_title(f"{labels[i]}→{predictions[i]}", fontsize=9, color="crimson")
    fig.suptitle(f"misclassified test digits (true→predicted): first {len(wrong[:count])} of {len(wrong)}")
    save_figure(fig, path)


def curves_figure(path, history, split="test"):
    """Loss and accuracy per epoch, on the training set and on `split` (the test set, or validation)."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_acc.axhline(common.TARGET_ACC, color="gray", linestyle="--", label=f"{common.TARGET_ACC}%")
    for ax, metric in ((ax_loss, "loss"), (ax_acc, "acc")):
        for name in ("train", split):
            ax.plot([e["epoch"] for e in history], [e[f"{name}_{metric}"] for e in history], "o-", label=name)
        ax.grid(alpha=0.3)
        ax.legend()
    # Scale to the second half of training, where 99.x is decided; the loss panel shows the start.
    late = [e[key] for e in history[len(history) // 2:] for key in ("train_acc", f"{split}_acc")]
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy (second half scaled)",
               ylim=(max(90, min(min(late), common.TARGET_ACC) - 0.3), 100))
    save_figure(fig, path)


def save_figure(fig, path):
    """Write `fig` as a PNG; in a notebook (Colab, Jupyter: the inline backend) also show it."""
    common.write_atomically(path, save=lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))
    if "inline" in matplotlib.get_backend():
        plt.show()
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", default="results", help="folder with <step>.json and <step>.pt; the figures go "
                        "there too")
    parser.add_argument("--data-dir", default=os.environ.get(common.DATA_DIR_ENV, "data"),
                        help="folder holding MNIST/raw/*-ubyte")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=STEPS, help="which steps")
    args = parser.parse_args(argv)
    _, _, images, labels = common.load_mnist(args.data_dir, torch.device("cpu"), subset=1)
    for name in args.steps:
        record, checkpoint = Path(args.out, f"{name}.json"), Path(args.out, f"{name}.pt")
        if not record.exists() and not checkpoint.exists():
            raise common.UserError(f"{args.out} holds no run of {name}: run `python {name}.py --save-model` first")
        if record.exists() and (run := json.loads(record.read_text()))["epochs"]:
            curves_figure(Path(args.out, f"{name}_curves.png"), run["epochs"], run.get("evaluated_on", "test"))
            print(f"{name}: wrote {args.out}/{name}_curves.png")
        if not checkpoint.exists():
            print(f"{name}: no {checkpoint} (a run with --save-model writes it): no receptive-field figures")
            continue
        model = load_checkpoint(checkpoint, name, importlib.import_module(name).Net())
        half, rf = receptive_field_figure(Path(args.out, f"{name}_receptive_field.png"), model,
                                          common.summarize(model), images)
        misclassified_figure(Path(args.out, f"{name}_misclassified.png"), model, images, labels)
        print(f"{name}: the centre unit of the last map weighs half of its input within the central {half} x "
              f"{half} px of its {rf} x {rf} px field; wrote {args.out}/{name}_receptive_field.png and "
              f"_misclassified.png")


if __name__ == "__main__":
    common.main_guard(main)
