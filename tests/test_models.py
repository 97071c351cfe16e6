"""The three networks: shapes, sizes, layers, receptive fields, and the summary's arithmetic."""
import copy
import importlib
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

import common
import figures
from conftest import STEPS


@pytest.fixture(params=STEPS)
def step(request):
    return importlib.import_module(request.param)


def test_output_is_ten_scores_per_image(step):
    model = step.Net().eval()
    assert model(torch.randn(5, 1, 28, 28)).shape == (5, 10)


def measured_receptive_field(model, layer_name, size=96):
    """The receptive field of one unit of `layer_name`'s output, measured: the input pixels whose
    gradient is not zero, on a blank image larger than the digit. Measured on a linear stand-in
    of the same geometry (activations dropped, max-pools averaged, every weight positive), so
    that no ReLU, max or cancellation hides a pixel the unit sees."""
    model = copy.deepcopy(model).double().eval()
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.MaxPool2d):
                setattr(module, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
            elif isinstance(child, (nn.ReLU, nn.Dropout)):
                setattr(module, name, nn.Identity())
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.abs() + 0.01)
    outputs = []
    dict(model.named_modules())[layer_name].register_forward_hook(lambda m, i, output: outputs.append(output))
    x = torch.zeros(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    model(x)
    unit = outputs[0]
    unit[0, 0, unit.shape[2] // 2, unit.shape[3] // 2].backward()
    rows, cols = (x.grad[0, 0] != 0).nonzero(as_tuple=True)
    assert int(rows.min()) > 0 and int(cols.min()) > 0  # inside the image: not cut by its border
    return int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1


def test_receptive_field_measured_from_gradients_is_the_summarys(step):
    """One output unit before the global average (step 1: its last convolution, 1x1 on a digit)."""
    rows = common.summarize(step.Net())
    last = next(i for i, r in enumerate(rows) if r["layer"] in ("AdaptiveAvgPool2d", "Flatten")) - 1
    assert measured_receptive_field(step.Net(), rows[last]["name"]) == (rows[last]["rf"], rows[last]["rf"])
    assert rows[last]["rf"] == {"step1_skeleton": 36, "step2_bn_gap": 24, "step3_aug_sched": 32}[step.__name__]
    assert rows[-1]["rf"] >= 28 and rows[-1]["shape"] == (10,)  # with the average: the whole digit


@pytest.mark.parametrize("name", ["step2_bn_gap", "step3_aug_sched"])
def test_small_steps_have_no_linear_layer_and_under_8k_params(name):
    model = importlib.import_module(name).Net()
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    assert any(isinstance(m, nn.AdaptiveAvgPool2d) for m in model.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert common.count_params(model) < 8000


def test_skeleton_has_no_batchnorm():
    import step1_skeleton
    assert not any(isinstance(m, nn.BatchNorm2d) for m in step1_skeleton.Net().modules())


def test_importing_a_step_trains_nothing(capsys):
    for name in STEPS:
        importlib.reload(importlib.import_module(name))
    assert capsys.readouterr().out == ""


def test_summary_receptive_field_and_jump_match_hand_computation():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),            # 28x28, rf 3, jump 1
        nn.ReLU(),                                # unchanged
        nn.Conv2d(4, 4, 3, stride=2, padding=1),  # 14x14, rf 3 + 2*1 = 5, jump 2
        nn.MaxPool2d(2),                          # 7x7,  rf 5 + 1*2 = 7, jump 4
        nn.Conv2d(4, 6, 3, dilation=2),           # 3x3,  rf 7 + 2*2*4 = 23, jump 4
        nn.Conv2d(6, 6, 1),                       # 3x3,  1x1 changes nothing
        nn.AdaptiveAvgPool2d(1),                  # 1x1,  kernel 3: rf 23 + 2*4 = 31, jump 12
    )
    rows = common.summarize(model)
    assert [(r["rf"], r["jump"]) for r in rows] == [
        (3, 1), (3, 1), (5, 2), (7, 4), (23, 4), (23, 4), (31, 12)]
    assert [r["shape"] for r in rows] == [
        (4, 28, 28), (4, 28, 28), (4, 14, 14), (4, 7, 7), (6, 3, 3), (6, 3, 3), (6, 1, 1)]
    assert [r["params"] for r in rows] == [40, 0, 148, 0, 222, 42, 0]
    assert rows[0]["macs"] == 28 * 28 * 4 * 9
    assert "total: 452 parameters" in common.format_summary(rows)


def test_summary_of_an_anti_aliased_pool_matches_hand_computation():
    import step3_aug_sched as step3
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),  # 28x28, rf 3, jump 1
        nn.MaxPool2d(2, stride=1),      # 27x27, rf 3 + 1*1 = 4, jump 1
        step3.BinomialBlur(),           # 14x14, rf 4 + 2*1 = 6, jump 2; 9 multiply-adds per output
        nn.Conv2d(4, 4, 3),             # 12x12, rf 6 + 2*2 = 10, jump 2
        nn.AdaptiveAvgPool2d(1),        # 1x1, kernel 12: rf 10 + 11*2 = 32, jump 24; 144 per output
    )
    rows = common.summarize(model)
    assert [(r["rf"], r["jump"]) for r in rows] == [(3, 1), (4, 1), (6, 2), (10, 2), (32, 24)]
    assert [r["shape"] for r in rows] == [(4, 28, 28), (4, 27, 27), (4, 14, 14), (4, 12, 12), (4, 1, 1)]
    assert [r["macs"] for r in rows] == [28 * 28 * 4 * 9, 0, 14 * 14 * 4 * 9, 12 * 12 * 4 * 36, 0]
    assert [r["params"] for r in rows] == [40, 0, 0, 148, 0]


def test_channels_last_computes_what_the_default_layout_computes(step):
    """Training runs the networks channels-last (common.train_one_seed): a layout, not other maths."""
    torch.manual_seed(0)
    model = step.Net().eval()  # no dropout: both see the same function
    fast = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x = torch.randn(32, 1, 28, 28)
    outputs = model(x), fast(x)
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-4, atol=1e-5)
    for output in outputs:
        output.square().sum().backward()
    for slow_parameter, fast_parameter in zip(model.parameters(), fast.parameters()):
        torch.testing.assert_close(fast_parameter.grad, slow_parameter.grad, rtol=1e-4, atol=1e-5)


def table_rows(text):
    """The data rows of format_summary's markdown table, as lists of cells."""
    lines = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| layer")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_receptive_field_table_reproduces_a_course_model_worked_by_hand():
    """Two unpadded 3x3 convolutions (28 -> 26 -> 24, RF 3, 5), a 2x2 max-pool (12, RF 6), four unpadded 3x3
    convolutions (10, 8, 6, 4; RF 10, 14, 18, 22) and a global average over the 4x4 map (RF 28)."""
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.ReLU(), nn.MaxPool2d(2),
                          *[nn.Conv2d(16, 16, 3) for _ in range(4)], nn.AdaptiveAvgPool2d(1))
    # input size, kernel, padding, stride, output size, jump in, jump out, RF in, RF out: as the course writes it
    by_hand = [(28, 3, 0, 1, 26, 1, 1, 1, 3), (26, 3, 0, 1, 24, 1, 1, 3, 5), (24, 2, 0, 2, 12, 1, 2, 5, 6),
               (12, 3, 0, 1, 10, 2, 2, 6, 10), (10, 3, 0, 1, 8, 2, 2, 10, 14), (8, 3, 0, 1, 6, 2, 2, 14, 18),
               (6, 3, 0, 1, 4, 2, 2, 18, 22), (4, 4, 0, 4, 1, 2, 8, 22, 28)]
    rows = table_rows(common.format_summary(common.summarize(model)))
    side = lambda cell: int(cell.split("x")[-1])  # "16x24x24" -> 24
    assert [(side(r[2]), *map(int, r[3:6]), side(r[6]), *map(int, r[7:11])) for r in rows] == by_hand
    assert [r[1] for r in rows][:2] == ["Conv2d + ReLU", "Conv2d + ReLU"]  # the ReLU folded into its row
    assert sum(int(r[11].replace(",", "")) for r in rows) == common.count_params(model)


@pytest.mark.parametrize("name, field", [("step1_skeleton", 24), ("step2_bn_gap", 24), ("step3_aug_sched", 32)])
def test_receptive_field_figure_marks_the_centre_unit_of_the_last_map(tmp_path, mnist, name, field):
    """The unit read by the global average (step 1: by its last convolution), its field as the table gives it,
    and the share of its gradient: half of it within a square no larger than the field, nor the digit."""
    model = importlib.import_module(name).Net()
    half, rf = figures.receptive_field_figure(tmp_path / "rf.png", model, common.summarize(model), mnist[2][:20])
    assert rf == field and 1 <= half <= min(rf, 28) and (tmp_path / "rf.png").stat().st_size > 10000


def test_every_epoch_trains_in_a_fresh_order_drawn_from_the_seed(tmp_path):
    """Image i is all i, so what the model sees in training gives the order: epoch after epoch a new
    permutation, the one that a generator seeded with the run's seed draws next."""
    n, seed, orders = 50, 7, []

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.zeros(()))

        def forward(self, x):
            if self.training:
                orders[-1].extend(x[:, 0, 0, 0].round().long().tolist())
            return self.scale * torch.zeros(len(x), 10)

    def make_optimizer(model, args, steps_per_epoch):
        orders.append([])  # the first epoch's
        return torch.optim.SGD(model.parameters(), lr=0.1), None

    images = torch.arange(n).float().view(n, 1, 1, 1).expand(n, 1, 28, 28)
    data = [images, torch.zeros(n, dtype=torch.long), images[:10], torch.zeros(10, dtype=torch.long)]
    test = lambda model, x, y: (orders.append([]), common.evaluate(model, x, y))[1]  # a new list per epoch
    args = SimpleNamespace(epochs=3, batch_size=8, lr=0.1, subset=None)
    common.train_one_seed("step1_skeleton", Recorder, make_optimizer, args, data, torch.device("cpu"), seed,
                          tmp_path / "run.json", test=test)
    expected = torch.Generator().manual_seed(seed)
    for order in orders[:3]:
        assert order == torch.randperm(n, generator=expected).tolist()
    assert len({tuple(order) for order in orders[:3]}) == 3 and orders[0] != list(range(n))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_dropout_by_gaps_drops_each_unit_with_probability_p_and_scales_what_it_keeps(layout):
    torch.manual_seed(0)
    layer, p = common.DropoutByGaps(0.05), 0.05
    x = torch.rand(64, 12, 28, 28).add_(0.5).contiguous(memory_format=layout).requires_grad_()
    out = layer(x)
    kept = out != 0
    dropped, n = 1 - kept.float().mean().item(), x.numel()
    assert abs(dropped - p) < 4 * (p * (1 - p) / n) ** 0.5  # within 4 standard errors of p
    for share in 1 - kept.float().mean((0, 2, 3)):  # every channel, as often: no pattern across the layout
        assert abs(share.item() - p) < 4 * (p * (1 - p) / (n / 12)) ** 0.5
    in_memory = ~kept.permute(0, 2, 3, 1) if layout == torch.channels_last else ~kept  # x's memory order
    tail = in_memory.flatten()[-n // 20:].float().mean().item()  # the last units too: the gaps never run short
    assert abs(tail - p) < 4 * (p * (1 - p) / (n / 20)) ** 0.5
    pairs = (in_memory.flatten()[1:] & in_memory.flatten()[:-1]).float().mean().item()  # neighbours independent
    assert abs(pairs - p * p) < 4 * (p * p / n) ** 0.5
    assert torch.allclose(out[kept], x[kept] / (1 - p))  # the kept units scaled by 1 / (1 - p): same mean
    out.sum().backward()
    assert torch.equal(x.grad, kept / (1 - p))  # the gradient flows through the kept units only, scaled alike
    assert not torch.equal(layer(x) != 0, kept)  # a fresh mask every call
    torch.manual_seed(1)
    first = layer(x) != 0
    torch.manual_seed(1)
    assert torch.equal(layer(x) != 0, first)  # drawn from torch's seeded generator
    assert torch.equal(layer.eval()(x), x) and torch.equal(common.DropoutByGaps(0.0)(x), x)
    assert torch.equal(common.DropoutByGaps(1.0)(x), torch.zeros_like(x))


def test_dropout_by_gaps_draws_geometric_gaps():
    """Runs of kept units between drops follow (1 - p)^k p, as independent drops give, here with p = 0.3."""
    torch.manual_seed(2)
    p, x = 0.3, torch.ones(400_000)
    drops = (common.DropoutByGaps(0.3)(x) == 0).nonzero().flatten()
    runs = torch.diff(drops) - 1  # kept units between two drops
    for k in range(6):
        share = (runs == k).float().mean().item()
        assert abs(share - (1 - p) ** k * p) < 4 * ((1 - p) ** k * p / len(runs)) ** 0.5


@pytest.mark.parametrize("channels, size", [(8, 28), (12, 28), (14, 12), (3, 7), (16, 10)])
def test_batch_norm_by_sums_trains_as_nn_batch_norm(channels, size):
    """Outputs, input and parameter gradients, running statistics: nn.BatchNorm2d's to float rounding, over two
    steps on a channels-last batch; the sums' own backward runs (16 channels: PyTorch's kernel, exactly)."""
    torch.manual_seed(0)
    x = (torch.randn(64, channels, size, size) * 3 + 1).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    grad = torch.randn_like(x)
    reference, by_sums = nn.BatchNorm2d(channels), common.BatchNorm2dBySums(channels)
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5), reference.bias.uniform_(-0.5, 0.5)
    by_sums.load_state_dict(reference.state_dict())
    results = []
    for layer in (reference, by_sums):
        for _ in range(2):
            out = layer(x)
            out.backward(grad)
        results.append([out, x.grad, layer.weight.grad, layer.bias.grad, *layer.state_dict().values()])
        assert out.is_contiguous(memory_format=torch.channels_last)
        x.grad = None
    assert ("BatchNormBySums" in type(out.grad_fn).__name__) == (channels % 16 != 0)
    for expected, got in zip(*results):
        assert torch.allclose(got.float(), expected.float(), rtol=1e-4, atol=1e-5 * expected.abs().max().item())
    assert torch.relu_(by_sums(x)).shape == x.shape  # its output is no view: an in-place ReLU may follow
    by_sums.load_state_dict(reference.state_dict())
    assert torch.equal(by_sums.eval()(x), reference.eval()(x))  # evaluation: PyTorch's kernel
