"""Backpropagation by hand: a 2-2-2 network with sigmoids, every derivative written as its chain
rule, then gradient descent at several learning rates. No autograd: tests/test_backprop.py
checks each derivative against torch.autograd and a central difference.

The network (no biases):
    h1 = w1*i1 + w2*i2        a_h1 = sigmoid(h1)        o1 = w5*a_h1 + w6*a_h2    a_o1 = sigmoid(o1)
    h2 = w3*i1 + w4*i2        a_h2 = sigmoid(h2)        o2 = w7*a_h1 + w8*a_h2    a_o2 = sigmoid(o2)
    E1 = 1/2 (t1 - a_o1)^2    E2 = 1/2 (t2 - a_o2)^2    E_total = E1 + E2
    update: w <- w - lr * dE_total/dw

The chain rule, using sigmoid'(x) = sigmoid(x) * (1 - sigmoid(x)):
    output layer: only E1 depends on w5 and w6, only E2 on w7 and w8
        dE_total/dw5 = (a_o1 - t1) * a_o1 * (1 - a_o1) * a_h1
        dE_total/dw6 = (a_o1 - t1) * a_o1 * (1 - a_o1) * a_h2
        dE_total/dw7 = (a_o2 - t2) * a_o2 * (1 - a_o2) * a_h1
        dE_total/dw8 = (a_o2 - t2) * a_o2 * (1 - a_o2) * a_h2
    hidden layer: a_h1 reaches E_total through o1 (w5) and o2 (w7), a_h2 through w6 and w8
        dE_total/da_h1 = (a_o1 - t1) * a_o1 * (1 - a_o1) * w5 + (a_o2 - t2) * a_o2 * (1 - a_o2) * w7
        dE_total/da_h2 = (a_o1 - t1) * a_o1 * (1 - a_o1) * w6 + (a_o2 - t2) * a_o2 * (1 - a_o2) * w8
        dE_total/dw1 = dE_total/da_h1 * a_h1 * (1 - a_h1) * i1
        dE_total/dw2 = dE_total/da_h1 * a_h1 * (1 - a_h1) * i2
        dE_total/dw3 = dE_total/da_h2 * a_h2 * (1 - a_h2) * i1
        dE_total/dw4 = dE_total/da_h2 * a_h2 * (1 - a_h2) * i2

    python backprop/backprop_by_hand.py                      # the standard values, 6 learning rates
    python backprop/backprop_by_hand.py --lrs 0.5 --iterations 20 --out /tmp/bp

Writes <out>/backprop.csv (one row per learning rate and iteration: the weights, every value of
the forward pass and the eight derivatives, before that iteration's update) and
<out>/backprop_loss.png (E_total against the iteration, one line per learning rate).
"""
import argparse
import csv
import math
import os
import sys
from pathlib import Path

INPUTS = (0.05, 0.10)  # i1, i2
TARGETS = (0.01, 0.99)  # t1, t2
WEIGHTS = (0.15, 0.20, 0.25, 0.30, 0.40, 0.45, 0.50, 0.55)  # w1 .. w8
LEARNING_RATES = (0.1, 0.2, 0.5, 0.8, 1.0, 2.0)
ITERATIONS = 100
COLUMNS = (["lr", "iteration"] + [f"w{k}" for k in range(1, 9)]
           + ["h1", "a_h1", "h2", "a_h2", "o1", "a_o1", "o2", "a_o2", "E1", "E2", "E_total"]
           + [f"dE_dw{k}" for k in range(1, 9)])


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def forward(w, i, t):
    """Every value of the forward pass, from the weights w = (w1..w8), inputs and targets."""
    w1, w2, w3, w4, w5, w6, w7, w8 = w
    (i1, i2), (t1, t2) = i, t
    h1, h2 = w1 * i1 + w2 * i2, w3 * i1 + w4 * i2
    a_h1, a_h2 = sigmoid(h1), sigmoid(h2)
    o1, o2 = w5 * a_h1 + w6 * a_h2, w7 * a_h1 + w8 * a_h2
    a_o1, a_o2 = sigmoid(o1), sigmoid(o2)
    E1, E2 = 0.5 * (t1 - a_o1) ** 2, 0.5 * (t2 - a_o2) ** 2
    return dict(h1=h1, a_h1=a_h1, h2=h2, a_h2=a_h2, o1=o1, a_o1=a_o1, o2=o2, a_o2=a_o2,
                E1=E1, E2=E2, E_total=E1 + E2)


def gradients(w, i, t, v):
    """dE_total/dw1 .. dE_total/dw8, by the chain rule, from the forward pass's values v."""
    w1, w2, w3, w4, w5, w6, w7, w8 = w
    (i1, i2), (t1, t2) = i, t
    # How E_total changes with each output's input o1, o2: dE/da_o * da_o/do.
    delta_o1 = (v["a_o1"] - t1) * v["a_o1"] * (1 - v["a_o1"])
    delta_o2 = (v["a_o2"] - t2) * v["a_o2"] * (1 - v["a_o2"])
    dE_dw5, dE_dw6 = delta_o1 * v["a_h1"], delta_o1 * v["a_h2"]
    dE_dw7, dE_dw8 = delta_o2 * v["a_h1"], delta_o2 * v["a_h2"]
    # Each hidden activation feeds both outputs: its derivative sums the two paths.
    dE_da_h1 = delta_o1 * w5 + delta_o2 * w7
    dE_da_h2 = delta_o1 * w6 + delta_o2 * w8
    delta_h1 = dE_da_h1 * v["a_h1"] * (1 - v["a_h1"])
    delta_h2 = dE_da_h2 * v["a_h2"] * (1 - v["a_h2"])
    dE_dw1, dE_dw2 = delta_h1 * i1, delta_h1 * i2
    dE_dw3, dE_dw4 = delta_h2 * i1, delta_h2 * i2
    return [dE_dw1, dE_dw2, dE_dw3, dE_dw4, dE_dw5, dE_dw6, dE_dw7, dE_dw8]


def update(w, grads, lr):
    """One step of gradient descent."""
    return [wk - lr * gk for wk, gk in zip(w, grads)]


def train(lr, iterations, w=WEIGHTS, i=INPUTS, t=TARGETS):
    """One row per iteration (a dict with COLUMNS), each before that iteration's update."""
    rows, w = [], list(w)
    for iteration in range(1, iterations + 1):
        values = forward(w, i, t)
        grads = gradients(w, i, t, values)
        rows.append(dict(lr=lr, iteration=iteration, **{f"w{k + 1}": wk for k, wk in enumerate(w)}, **values,
                         **{f"dE_dw{k + 1}": g for k, g in enumerate(grads)}))
        w = update(w, grads, lr)
    return rows


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def plot_losses(path, rows):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for lr in dict.fromkeys(r["lr"] for r in rows):
        mine = [r for r in rows if r["lr"] == lr]
        ax.plot([r["iteration"] for r in mine], [r["E_total"] for r in mine], label=f"lr {lr:g}")
    ax.set(xlabel="iteration", ylabel="E_total", title="2-2-2 network: E_total by learning rate")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def finite(text):
    """An argparse type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--inputs", type=finite, nargs=2, default=INPUTS, metavar=("I1", "I2"))
    parser.add_argument("--targets", type=finite, nargs=2, default=TARGETS, metavar=("T1", "T2"))
    parser.add_argument("--weights", type=finite, nargs=8, default=WEIGHTS, metavar="W", help="w1 .. w8")
    parser.add_argument("--lrs", type=finite, nargs="+", default=LEARNING_RATES, help="learning rates")
    parser.add_argument("--iterations", type=int, default=ITERATIONS, help="updates per learning rate")
    parser.add_argument("--out", default="results/backprop", help="folder for backprop.csv and backprop_loss.png")
    args = parser.parse_args(argv)
    if args.iterations <= 0:
        parser.error(f"argument --iterations: must be positive, got {args.iterations}")
    if any(lr <= 0 for lr in args.lrs):
        parser.error(f"argument --lrs: every learning rate must be positive, got {args.lrs}")
    rows = [row for lr in args.lrs for row in train(lr, args.iterations, args.weights, args.inputs, args.targets)]
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_csv(out / "backprop.csv", rows)
        plot_losses(out / "backprop_loss.png", rows)
    except OSError as error:
        sys.exit(f"error: cannot write to {error.filename or out}: {error.strerror or error}")
    first = rows[0]
    print(f"iteration 1: E_total {first['E_total']:.9f}; "
          + ", ".join(f"dE/dw{k} {first[f'dE_dw{k}']:.9f}" for k in range(1, 9)))
    for lr in args.lrs:
        last = [r for r in rows if r["lr"] == lr][-1]
        print(f"lr {lr:g}: E_total {first['E_total']:.6f} -> {last['E_total']:.6f} after {args.iterations} iterations")
    print(f"wrote {os.path.join(out, 'backprop.csv')} and {os.path.join(out, 'backprop_loss.png')}")


if __name__ == "__main__":
    main()
