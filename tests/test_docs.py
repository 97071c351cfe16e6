"""Every number the documents quote from a run is checked against the JSON it comes from.

The generated pages (results.md, the README's results section, results/robustness.md and
EXPERIMENTS.md) are written again from the committed records and must come out as committed. The
numbers typed in prose (the step docstrings' Result and Analysis, the README around its table)
are listed in CLAIMS, each with the record it comes from; any number in that prose that no claim
covers fails the test, so a new number cannot be typed without its source."""
import json
import os
import re
import shutil
import statistics

import pytest

import common
import report
import robustness
from conftest import ROOT, STEPS


def makefile_seeds(name):
    """The seeds the Makefile names as NAME ?= 31,32,...: the seeds the pages report."""
    line = re.search(rf"^{name} \?= ([\d,]+)$", (ROOT / "Makefile").read_text(), re.M)
    return [int(seed) for seed in line.group(1).split(",")]


def load(path):
    return json.loads((ROOT / path).read_text())


def step_run(step):
    return load(f"results/{step}.json")


def report_seed_runs():
    return [load(f"results/experiments/step3/seeds/step3_aug_sched_seed{seed}.json")
            for seed in makefile_seeds("SEEDS")]


def variant_runs(name, seeds=None, split="test"):
    """The recorded runs of a variant on one set (and only `seeds`, when given)."""
    runs = [json.loads(p.read_text()) for p in sorted((ROOT / "results/experiments" / name / "seeds").glob("*.json"))]
    return sorted((r for r in runs if report.evaluated_on(r) == split and (seeds is None or r["seed"] in seeds)),
                  key=lambda r: r["seed"])


def test_generated_pages_are_what_the_records_give(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the pages' links are relative to the project's top
    monkeypatch.setattr(report, "plot_seeds", lambda *args: None)  # figures are not the subject here
    monkeypatch.setattr(report, "plot_frontier", lambda *args: None)
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    report.write_results_md([f"results/{step}.json" for step in STEPS], tmp_path / "results.md",
                            "results/experiments/step3", makefile_seeds("SEEDS"), "results/robustness.md",
                            tmp_path / "README.md")
    recorded = load("results/robustness.json")["accuracy"]
    written = ROOT / f"EXPERIMENTS.md.{os.getpid()}.check"  # beside the page: its links are relative to it
    try:
        report.write_experiments_md("results/experiments", written, load("results/experiments/variants.json"))
        shutil.move(written, tmp_path / "EXPERIMENTS.md")
    finally:
        written.unlink(missing_ok=True)
    for page in ("results.md", "README.md", "EXPERIMENTS.md"):
        assert (tmp_path / page).read_text() == (ROOT / page).read_text(), f"{page} is not what the records give"
    assert robustness.table(recorded) + "\n" == (ROOT / "results/robustness.md").read_text()


# The prose's numbers: (file, pattern, value from the records). A pattern's groups are the quoted numbers,
# compared as text with what the function returns (one string per group).
def best(run):
    return f"{max(report.accuracies(run)):.2f}"


def worst_last_5(runs):
    return f"{min(a for r in runs for a in report.accuracies(r)[-report.LAST:]):.2f}"


def mean_std(runs):
    finals = [report.accuracies(r)[-1] for r in runs]
    return f"{statistics.mean(finals):.2f}", f"{statistics.stdev(finals):.2f}"


def passing(runs):
    return str(sum(min(report.accuracies(r)[-report.LAST:]) >= report.TARGET_ACC for r in runs)), str(len(runs))


def per_epoch(run):
    return f"{run['seconds'] / len(run['epochs']):.1f}"


def moved(step, key, digits=1):
    return f"{load('results/robustness.json')['accuracy'][step][key]:.{digits}f}"


def acc(step, index):
    return f"{report.accuracies(step_run(step))[index]:.2f}"


def layer_params(step, name):
    return f"{next(layer['params'] for layer in step_run(step)['layers'] if layer['name'] == name):,}"


def after_epoch(step, key, first, digits):
    """The lowest and highest of an epoch quantity from epoch `first` on."""
    values = [epoch[key] for epoch in step_run(step)["epochs"][first - 1:]]
    return f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"


def largest_move(runs, first):
    """The largest change in accuracy from one epoch to the next, from epoch `first` on, over `runs`."""
    return max(abs(b - a) for r in runs for a, b in zip(report.accuracies(r)[first - 2:], report.accuracies(r)[first - 1:]))


def under(value, bound):
    return bound if value < float(bound) else f"{value} (not under {bound})"


def below(low, high):
    return (low, high) if float(low) < float(high) else (f"{low} (not below)", high)


def if_true(condition, text):
    return text if condition else f"not so: {text}"


def worst_seed(runs):
    return str(min(runs, key=lambda r: min(report.accuracies(r)[-report.LAST:]))["seed"])


def header(step):
    run = step_run(step)
    return f"{run['params']:,}", f"{run['macs'] / 1e6:.2f}", str(run["receptive_field"])


def final_is_best(step):
    return if_true(acc(step, -1) == best(step_run(step)), acc(step, -1))


def never_at_target(step):
    return if_true(max(report.accuracies(step_run(step))) < report.TARGET_ACC, f"{report.TARGET_ACC:g}")


def timing(step):
    run = step_run(step)
    return per_epoch(run), f"{run['seconds'] / 60:.1f}"


def frontier(name):
    runs = variant_runs(name, seeds=range(21, 31))  # the development seeds' test runs
    return (f"{runs[0]['params']:,}", *passing(runs))


def within_two_errors(names):
    """'two', and the fewest seeds paired, when each variant's paired validation difference from the variant
    it is paired with is under two standard errors."""
    variants = json.loads((ROOT / "results/experiments/variants.json").read_text())
    pairs = [report.paired_difference(variant_runs(name, split="validation"),
                                      variant_runs(variants[name]["paired_with"], split="validation"))
             for name in names]
    return if_true(all(abs(mean) < 2 * error for _, mean, error in pairs), "two"), str(min(n for n, _, _ in pairs))


def paired_on_validation(name, gain):
    """A variant's paired validation difference from the variant it is paired with, '+0.021', '0.010', said to be
    a gain (at least two standard errors) or not, as `gain` says."""
    variants = json.loads((ROOT / "results/experiments/variants.json").read_text())
    n, mean, error = report.paired_difference(variant_runs(name, split="validation"),
                                              variant_runs(variants[name]["paired_with"], split="validation"))
    return if_true((mean >= 2 * error) == gain and n >= 10, f"{mean:+.3f}"), f"{error:.3f}"


def paired_worst_on_validation(name, against):
    """The paired validation difference in the worst of the last 5 epochs, '-0.073', '0.017'."""
    n, mean, error = report.paired_difference(variant_runs(name, split="validation"),
                                              variant_runs(against, split="validation"),
                                              lambda accuracies: min(accuracies[-report.LAST:]))
    return f"{mean:+.3f}", f"{error:.3f}", against


def stopped_early_on_validation(name):
    """A variant stopped before 10 seeds because it was clearly behind: its paired validation differences, final and
    worst of the last 5, and the seeds paired; the worst of the last 5 at least two standard errors below."""
    runs, step3_runs = variant_runs(name, split="validation"), variant_runs("step3", split="validation")
    paired = [report.paired_difference(runs, step3_runs, measure)
              for measure in (lambda a: a[-1], lambda a: min(a[-report.LAST:]))]
    (n, final, final_error), (_, worst, worst_error) = paired
    return (f"{final:+.3f}", f"{final_error:.3f}", if_true(worst <= -2 * worst_error and n < 10, f"{worst:+.3f}"),
            f"{worst_error:.3f}", str(n))


def any_space(pattern):
    """`pattern` with each space matching any run of spaces and line breaks (a docstring's wrapping)."""
    return pattern.replace(" ", r"\s+")


DESIGN_SEEDS = range(41, 51)  # the report seeds of the designs under 4,000 parameters


def design_on_report_seeds(name):
    """The chosen design on its report seeds: name, parameters, passes, seeds, worst of the last 5, mean final."""
    runs = variant_runs(name, DESIGN_SEEDS)
    assert [r["seed"] for r in runs] == list(DESIGN_SEEDS)
    return (name, f"{runs[0]['params']:,}", *passing(runs), worst_last_5(runs), mean_std(runs)[0])


def bench_share(*operations):
    """The summed share of `operations` in results/bench.md's profile of a training step."""
    bench = (ROOT / "results/bench.md").read_text()
    return f"{sum(float(re.search(rf'[|] `{op}` [|] ([0-9.]+)% [|]', bench).group(1)) for op in operations):.1f}"


def bench_epochs():
    """Step 3's training epoch in results/bench.md, this tree's and its base commit's seconds, and their ratio."""
    rows = re.findall(r"^[|] (this tree|\w{7}) [|] [\d.]+ [|] [\d.]+ [|] ([\d.]+) [|] ([\d.]+) [|]$",
                      (ROOT / "results/bench.md").read_text(), re.M)
    (ours, ours_seconds, ratio), (base, base_seconds, _) = rows
    return ours_seconds, base_seconds, base, ratio


ONE, TWO, THREE = (f"{step}.py" for step in STEPS)
HEADER = r"([\d,]+) parameters, ([\d.]+) M multiply-adds per image, receptive field (\d+) px"
CLAIMS = [
    (ONE, HEADER, lambda: header(STEPS[0])),
    (ONE, r"Final test accuracy ([\d.]+)%, its best epoch", lambda: final_is_best(STEPS[0])),
    (ONE, r"train accuracy at ([\d.]+)%", lambda: f"{step_run(STEPS[0])['epochs'][-1]['train_acc']:.2f}"),
    (ONE, r"no epoch at\s+or above ([\d.]+)%", lambda: never_at_target(STEPS[0])),
    (ONE, r"([\d.]+) s per epoch \(training and test pass\), ([\d.]+) minutes", lambda: timing(STEPS[0])),
    (ONE, r"\(([\d.]+)%\s+test after one\)", lambda: acc(STEPS[0], 0)),
    (ONE, r"wanders between ([\d.]+)% and ([\d.]+)%", lambda: after_epoch(STEPS[0], "test_acc", 5, 2)),
    (ONE, r"test loss between ([\d.]+) and ([\d.]+)", lambda: after_epoch(STEPS[0], "test_loss", 5, 3)),
    (ONE, r"conv at 4x4 \(([\d,]+)\)", lambda: layer_params(STEPS[0], "block3.0")),
    (ONE, r"output\s+layer \(([\d,]+)\)", lambda: layer_params(STEPS[0], "output.0")),
    (TWO, HEADER, lambda: header(STEPS[1])),
    (TWO, r"Final test accuracy ([\d.]+)%, its best epoch", lambda: final_is_best(STEPS[1])),
    (TWO, r"train accuracy at ([\d.]+)%", lambda: f"{step_run(STEPS[1])['epochs'][-1]['train_acc']:.2f}"),
    (TWO, r"no epoch\s+at or above ([\d.]+)%", lambda: never_at_target(STEPS[1])),
    (TWO, r"([\d.]+) s per epoch \(training and test pass\), ([\d.]+) minutes", lambda: timing(STEPS[1])),
    (TWO, r"yet ([\d.]+) points better", lambda: f"{float(acc(STEPS[1], -1)) - float(acc(STEPS[0], -1)):.2f}"),
    (TWO, r"moves by up to ([\d.]+) points", lambda: f"{largest_move([step_run(STEPS[1])], 5):.2f}"),
    (TWO, r"it reads ([\d.]+)% of them \(step 3:\s+([\d.]+)%", lambda: (moved(STEPS[1], "shifted, strong", 2),
                                                                      moved(STEPS[2], "shifted, strong", 2))),
    (THREE, HEADER, lambda: header(STEPS[2])),
    (THREE, r"Seed 1: final\s+([\d.]+)% \(best ([\d.]+)%\), at or above ([\d.]+)% from epoch (\d+) on",
     lambda: (acc(STEPS[2], -1), best(step_run(STEPS[2])), f"{report.TARGET_ACC:g}",
              str(report.holds_from(report.accuracies(step_run(STEPS[2])))))),
    (THREE, r"final ([\d.]+)% \+- ([\d.]+) \(mean, sample std\)", lambda: mean_std(report_seed_runs())),
    (THREE, r"worst of the last 5 epochs ([\d.]+)% \(seed (\d+)\);\s+(\d+) of (\d+) pass",
     lambda: (worst_last_5(report_seed_runs()), worst_seed(report_seed_runs()), *passing(report_seed_runs()))),
    (THREE, r"([\d.]+)% rotated up to 30 degrees \(step 2:\s+([\d.]+)%\), ([\d.]+)% shifted 4 px \(([\d.]+)%\)",
     lambda: (moved(STEPS[2], "rotated, strong", 2), moved(STEPS[1], "rotated, strong", 2),
              moved(STEPS[2], "shifted, strong", 2), moved(STEPS[1], "shifted, strong", 2))),
    (THREE, r"strokes 1 px thinner ([\d.]+)%, below\s+step 1's ([\d.]+)%",
     lambda: below(moved(STEPS[2], "thinner, strong", 2), moved(STEPS[0], "thinner, strong", 2))),
    (THREE, r"a seed moves by under ([\d.]+) point", lambda: under(largest_move(report_seed_runs(), 12), "0.1")),
    (THREE, r"(\d+) passes in (\d+) still allow a failure rate up to (\d+)%",
     lambda: (*passing(report_seed_runs()), f"{100 * report.failure_bound(0, len(report_seed_runs())):.0f}")),
    (THREE, r"Where ([\d,]+) stands", lambda: header(STEPS[2])[0]),
    (THREE, r"x0.85 \(([\d,]+) parameters\)\s+passed (\d+) of (\d+)", lambda: frontier("widths-x0.85")),
    (THREE, r"x0.7 \(([\d,]+)\) (\d+) of (\d+)", lambda: frontier("widths-x0.7")),
    (THREE, r"chosen on validation,\s+passed (\d+) of (\d+) of its own report seeds 41-50, the worst of its last 5"
            r"\s+epochs\s+([\d.]+)%", lambda: (*passing(variant_runs("x0.7-no-dropout-cosine-to-end", DESIGN_SEEDS)),
                                         worst_last_5(variant_runs("x0.7-no-dropout-cosine-to-end", DESIGN_SEEDS)))),
    (THREE, any_space(r"moving average of the weights for the test moved the final epoch by ([+-][\d.]+) \+- ([\d.]+) "
                      r"and the worst of the last 5 by ([+-][\d.]+) \+- ([\d.]+)"),
     lambda: (*paired_on_validation("step3-average", gain=False),
              *paired_worst_on_validation("step3-average", "step3")[:2])),
    (THREE, any_space(r"cosine run to the last step moved them by ([+-][\d.]+) \+- ([\d.]+) and ([+-][\d.]+) \+- "
                      r"([\d.]+) \((\d+) seeds, stopped early"),
     lambda: stopped_early_on_validation("step3-cosine-to-end")),
    ("README.md", r"\| ([\d.]+)%: the structure learns \(([\d.]+)% after one epoch\) but memorises \(train "
                  r"([\d.]+)%\), with ([\d,]+) parameters",
     lambda: (acc(STEPS[0], -1), acc(STEPS[0], 0), f"{step_run(STEPS[0])['epochs'][-1]['train_acc']:.2f}",
              header(STEPS[0])[0])),
    ("README.md", r"\| ([\d.]+)% with a third of the parameters \(([\d,]+)\)",
     lambda: (acc(STEPS[1], -1), header(STEPS[1])[0])),
    ("README.md", r"at least ([\d.]+)% in each of the last 5 epochs on (\d+) of (\d+) report seeds \(mean ([\d.]+)%\)",
     lambda: (worst_last_5(report_seed_runs()), *passing(report_seed_runs()), mean_std(report_seed_runs())[0])),
    ("README.md", r"shifted 4 px: ([\d.]+)% against step 2's ([\d.]+)%\), strokes 1 px thinner worse "
                  r"\(([\d.]+)% against step 1's ([\d.]+)%\)",
     lambda: (moved(STEPS[2], "shifted, strong", 2), moved(STEPS[1], "shifted, strong", 2),
              *below(moved(STEPS[2], "thinner, strong", 2), moved(STEPS[0], "thinner, strong", 2)))),
    ("README.md", r"paired over (\d+) seeds against the network it changes: no dropout, batches of 64 and gentler "
                  r"warps each moved\s+it by less than (two) standard errors",
     lambda: within_two_errors(("x0.7-no-dropout", "x0.7-batch64-no-dropout", "x0.7-no-dropout-mild-warps"))[::-1]),
    ("README.md", r"moving average of the weights gained\s+([+-][\d.]+) ± ([\d.]+) point",
     lambda: paired_on_validation("x0.7-no-dropout-average", gain=True)),
    ("README.md", r"at 75% of the steps\) gained\s+([+-][\d.]+) ± ([\d.]+);",
     lambda: paired_on_validation("x0.7-no-dropout-cosine-to-end", gain=True)),
    ("README.md", r"both, ([+-][\d.]+) ± ([\d.]+) against the\s+cosine alone: no gain",
     lambda: paired_on_validation("x0.7-no-dropout-average-cosine-to-end", gain=False)),
    ("README.md", r"So the design is\s+`([\w.-]+)` \(([\d,]+) parameters\), run once on the report seeds 41-50: "
                  r"(\d+) of (\d+) pass,\s+worst of the last 5 epochs ([\d.]+)%, mean final ([\d.]+)%",
     lambda: design_on_report_seeds("x0.7-no-dropout-cosine-to-end")),
    ("README.md", r"on validation its worst\s+of the last 5 epochs was ([+-][\d.]+) ± ([\d.]+) against ([\w.-]+)'s",
     lambda: paired_worst_on_validation("x0.7-no-dropout-cosine-to-end", "x0.7-no-dropout")),
    ("README.md", r"the convolutions\s+take ([\d.]+)% of its time, the max-pools ([\d.]+)%",
     lambda: (bench_share("aten::convolution_backward", "aten::mkldnn_convolution"),
              bench_share("aten::max_pool2d_with_indices"))),
    ("README.md", r"takes ([\d.]+) s against\s+([\d.]+) s at (\w+), the code before this speed work\s+\(([\d.]+)x of it",
     bench_epochs),
]


def prose(path):
    """The part of a file whose numbers are typed: a step's Result and Analysis, the README outside its table."""
    text = (ROOT / path).read_text()
    if path.endswith(".py"):
        docstring = text.split('"""')[1]
        return docstring[docstring.index("\nResult"):]
    before, _, rest = text.partition("<!-- results:start -->")
    return before + rest.partition("<!-- results:end -->")[2]


# Numbers that are the exercise's, not a run's: the goal, the budgets and the data's sizes.
GIVEN = {f"{report.TARGET_ACC:g}", "8,000", "4,000", "3,000", f"{common.TRAIN_IMAGES:,}",
         f"{common.VALIDATION_IMAGES:,}", f"{common.TRAIN_IMAGES - common.VALIDATION_IMAGES:,}"}
NUMBER = re.compile(r"(?<![\w.])[-+]?\d[\d,]*\.\d+|(?<![\w.])\d{1,3}(?:,\d{3})+|\b\d+ of \d+\b")


@pytest.mark.parametrize("path", sorted({path for path, _, _ in CLAIMS}))
def test_every_number_in_the_prose_is_the_records(path):
    text = prose(path)
    for _, pattern, value in (claim for claim in CLAIMS if claim[0] == path):
        found = re.search(pattern, text, re.S)
        assert found, f"{path}: no text matches {pattern!r}"
        expected = value()
        expected = (expected,) if isinstance(expected, str) else tuple(expected)
        assert found.groups() == expected, f"{path}: {found.group(0)!r} quotes {found.groups()}, the records {expected}"
        text = text[:found.start()] + text[found.end():]  # what a claim covered
    unchecked = [n for n in NUMBER.findall(text) if n not in GIVEN]
    assert not unchecked, f"{path}: numbers no claim checks: {unchecked}"
