"""backprop/backprop_by_hand.py: every hand-written derivative against autograd and a central
difference; the update; the loss at every default rate; the CSV and the command line."""
import csv
import random
import sys

import pytest
import torch

from conftest import ROOT, assert_no_traceback, run_script

sys.path.insert(0, str(ROOT / "backprop"))
import backprop_by_hand as bp  # noqa: E402


def autograd_gradients(w, i, t):
    """dE_total/dw by torch.autograd, in float64, with the network written as tensors."""
    w = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    i, t = torch.tensor(i, dtype=torch.float64), torch.tensor(t, dtype=torch.float64)
    a_h = torch.sigmoid(w[:4].view(2, 2) @ i)  # rows: (w1, w2), (w3, w4)
    a_o = torch.sigmoid(w[4:].view(2, 2) @ a_h)  # rows: (w5, w6), (w7, w8)
    (0.5 * (t - a_o) ** 2).sum().backward()
    return w.grad.tolist()


def central_difference(w, i, t, step=1e-6):
    def loss(k, delta):
        moved = list(w)
        moved[k] += delta
        return bp.forward(moved, i, t)["E_total"]
    return [(loss(k, step) - loss(k, -step)) / (2 * step) for k in range(8)]


def random_case(rng):
    return ([rng.uniform(-2, 2) for _ in range(8)], [rng.uniform(-1, 1) for _ in range(2)],
            [rng.uniform(0, 1) for _ in range(2)])


CASES = [(bp.WEIGHTS, bp.INPUTS, bp.TARGETS)] + [random_case(random.Random(seed)) for seed in range(20)]


@pytest.mark.parametrize("w, i, t", CASES)
def test_every_derivative_equals_autograd_and_a_central_difference(w, i, t):
    by_hand = bp.gradients(w, i, t, bp.forward(w, i, t))
    assert by_hand == pytest.approx(autograd_gradients(w, i, t), rel=1e-12, abs=1e-15)
    assert by_hand == pytest.approx(central_difference(w, i, t), rel=1e-6, abs=1e-10)


def test_forward_pass_of_the_standard_values():
    v = bp.forward(bp.WEIGHTS, bp.INPUTS, bp.TARGETS)
    assert v["h1"] == pytest.approx(0.15 * 0.05 + 0.20 * 0.10)  # 0.0275
    assert v["a_h1"] == pytest.approx(1 / (1 + 2.718281828459045 ** -0.0275))
    assert v["E_total"] == pytest.approx(0.2425198570, abs=1e-9)  # the course sheet's first row


def test_one_update_moves_each_weight_by_lr_times_its_derivative():
    rows = bp.train(0.5, 2)
    for k in range(1, 9):
        assert rows[1][f"w{k}"] == rows[0][f"w{k}"] - 0.5 * rows[0][f"dE_dw{k}"]


@pytest.mark.parametrize("lr", bp.LEARNING_RATES)
def test_loss_falls_at_every_default_rate(lr):
    losses = [row["E_total"] for row in bp.train(lr, bp.ITERATIONS)]
    assert all(b < a for a, b in zip(losses, losses[1:]))
    assert losses[-1] < 0.6 * losses[0]


def test_command_writes_the_csv_and_the_figure(tmp_path):
    result = run_script("backprop/backprop_by_hand.py", "--lrs", "0.5", "2", "--iterations", "5", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "backprop.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == (["lr", "iteration", "w1", "w2", "w3", "w4", "w5", "w6", "w7", "w8", "h1", "a_h1",
                              "h2", "a_h2", "o1", "a_o1", "o2", "a_o2", "E1", "E2", "E_total"]
                             + [f"dE_dw{k}" for k in range(1, 9)])
    assert [(float(r["lr"]), int(r["iteration"])) for r in rows] == [(lr, n) for lr in (0.5, 2.0) for n in range(1, 6)]
    assert float(rows[0]["E_total"]) == pytest.approx(0.2425198570, abs=1e-9)
    assert float(rows[0]["dE_dw5"]) == pytest.approx(0.0721570729, abs=1e-9)
    assert (tmp_path / "backprop_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, message", [(["--iterations", "0"], "must be positive"),
                                           (["--iterations", "-3"], "must be positive"),
                                           (["--iterations", "ten"], "invalid int value"),
                                           (["--lrs", "abc"], "not a number"),
                                           (["--lrs", "0"], "must be positive"),
                                           (["--weights", "1", "2"], "expected 8 arguments")])
def test_a_bad_value_is_one_clear_line(tmp_path, args, message):
    result = run_script("backprop/backprop_by_hand.py", *args, "--out", tmp_path)
    assert result.returncode == 2
    assert message in result.stderr.splitlines()[-1]
    assert_no_traceback(result.stderr)
