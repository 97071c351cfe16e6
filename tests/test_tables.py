"""The arithmetic behind results.md, seeds tables and EXPERIMENTS.md, on made-up histories."""
import json

import report
from conftest import call


def test_epochs_at_target_counts_and_groups_epochs():
    assert report.epochs_at_target([99.3, 99.4, 99.5, 99.2, 99.41]) == "3: 2-3, 5"
    assert report.epochs_at_target([99.0, 99.39]) == "0"


def test_holds_from_is_the_start_of_the_final_run_at_target():
    assert report.holds_from([99.5, 99.3, 99.4, 99.45]) == 3
    assert report.holds_from([99.5, 99.45, 99.3]) is None
    assert report.holds_from([99.4] * 3) == 1


def make_run(seed, accuracies):
    return {"seed": seed, "epochs": [{"test_acc": a} for a in accuracies]}


def test_seeds_table_summarises_pass_mean_std_and_worst():
    runs = [make_run(1, [98.0, 99.41, 99.42, 99.43, 99.44, 99.45, 99.50]),
            make_run(2, [98.0, 99.50, 99.39, 99.50, 99.50, 99.50, 99.60])]
    table = report.seeds_table(runs)
    assert "| seed | ep 3 | ep 4 | ep 5 | ep 6 | ep 7 |" in table
    assert "| 1 | 99.42 | 99.43 | 99.44 | 99.45 | 99.50 | 2 | 99.50 | yes |" in table
    assert "| 2 | 99.39 | 99.50 | 99.50 | 99.50 | 99.60 | 4 | 99.60 | NO |" in table
    assert "mean 99.55% ± 0.07" in table  # sample std of 99.50 and 99.60
    assert "all seeds: 99.39%" in table
    assert "1 of 2" in table


def test_seeds_command_builds_one_table_from_separate_runs(tmp_path):
    records = [dict(make_run(seed, accs), step="step3_aug_sched", params=7662, device="cpu",
                    date="2026-11-22 14:02", threads=1)
               for seed, accs in [(4, [99.0, 99.5, 99.6]), (2, [99.0, 99.3, 99.45])]]
    paths = []
    for record in records:
        paths.append(tmp_path / f"seed{record['seed']}.json")
        paths[-1].write_text(json.dumps(record))
    out = tmp_path / "seeds.md"
    code, _, stderr = call(report.main, "seeds", *paths, "--output", out)
    assert code == 0, stderr
    # Worked out by hand: seed 2 is at 99.4% or above from epoch 3, seed 4 from epoch 2; both
    # have 99.00 among their last 3 epochs; mean (99.45 + 99.60) / 2, sample std 0.15 / sqrt(2).
    assert out.read_text() == """# step3_aug_sched over 2 seeds

3 epochs each, 7,662 parameters, device cpu, 1 thread(s) per run, 2026-11-22 14:02.

| seed | ep 1 | ep 2 | ep 3 | ≥ 99.4% from epoch | final | passes |
|---|---|---|---|---|---|---|
| 2 | 99.00 | 99.30 | 99.45 | 3 | 99.45 | NO |
| 4 | 99.00 | 99.50 | 99.60 | 2 | 99.60 | NO |

- final test accuracy: mean 99.53% ± 0.11 (sample std) over 2 seeds
- worst of the last 3 epochs, all seeds: 99.00%
- seeds at ≥ 99.4% in each of their last 3 epochs: 0 of 2
"""
    paths[0].write_text(json.dumps(dict(records[0], step="step2_bn_gap")))
    code, _, stderr = call(report.main, "seeds", *paths, "--output", tmp_path / "mixed.md")
    assert code == 1 and "different steps" in stderr


def test_paired_difference_pairs_only_like_runs_on_the_seeds_both_ran():
    like = dict(threads=1, code_fingerprint="f1", evaluated_on="test")
    baseline = [dict(make_run(seed, [99.0, acc]), **like) for seed, acc in [(1, 99.40), (2, 99.50), (3, 99.60)]]
    variant = [dict(make_run(seed, [99.0, acc]), **like) for seed, acc in [(2, 99.60), (3, 99.80), (9, 90.0)]]
    n, mean, se = report.paired_difference(variant, baseline)
    assert n == 2 and abs(mean - 0.15) < 1e-9 and abs(se - 0.05) < 1e-9  # diffs 0.1, 0.2
    assert report.paired_difference(variant[:1], baseline) is None  # one pair says nothing
    for change, why in [(dict(threads=2), "thread counts"), (dict(code_fingerprint="f2"), "other code"),
                        (dict(code_fingerprint=None), "no code fingerprint"), (dict(evaluated_on="validation"),
                                                                                "different sets")]:
        unlike = [dict(variant[0], **change)] + variant[1:]
        assert report.paired_difference(unlike, baseline).startswith("not paired") and why in \
            report.paired_difference(unlike, baseline)
    assert report.ranges([21, 22, 23, 25, 27, 28]) == "21-23, 25, 27-28"


def test_failure_bound_is_clopper_pearsons():
    assert abs(report.failure_bound(0, 10) - (1 - 0.05 ** 0.1)) < 1e-9  # 0 of 10: about 26%
    assert abs(report.failure_bound(0, 10) - 0.2589) < 1e-4
    assert abs(report.failure_bound(1, 10) - 0.3942) < 1e-4  # the binomial tail at 1 failure is 5% there
    assert report.failure_bound(3, 3) == 1.0


def test_experiments_page_is_written_from_the_recorded_runs(tmp_path):
    # (variant, set, code fingerprint, recipe fingerprint, finals on seeds 21 and 22)
    specs = [("step3", "test", "f1", None, [99.40, 99.50]), ("step3", "validation", "f1", None, [99.30, 99.40]),
             ("silu", "validation", "f1", "r1", [99.40, 99.60]), ("mish", "validation", "f1", "r1", [99.40, 99.50]),
             ("silu", "test", "f0", "r0", [99.50, 99.70]), ("old", "test", None, None, [99.50, 99.50])]
    for variant, split, code, recipe, finals in specs:
        (tmp_path / variant / "seeds").mkdir(parents=True, exist_ok=True)
        for seed, final in zip((21, 22), finals):
            run = dict(make_run(seed, [99.45] * 4 + [final]), step="step3_aug_sched", evaluated_on=split, params=7662)
            run["epochs"] = [{f"{split}_acc": e["test_acc"], "train_seconds": 30.0}
                             for e in run["epochs"]]
            if variant != "old":  # runs recorded before threads, commits and fingerprints were
                run.update(threads=1, commit=("b" if code == "f0" else "a") * 40, uncommitted_changes=False,
                           code_fingerprint=code, **({"recipe_fingerprint": recipe} if recipe else {}))
            name = f"step3_aug_sched_seed{seed}{'_validation' if split == 'validation' else ''}.json"
            (tmp_path / variant / "seeds" / name).write_text(json.dumps(run))
    page = tmp_path / "EXPERIMENTS.md"
    now = dict(code_fingerprint="f1", recipe_fingerprint="r1")  # what a run of this tree would record
    variants = {"step3": dict(what="step 3 unchanged", paired_with="step3", code_fingerprint="f1"),
                "silu": dict(what="SiLU", paired_with="step3", decided="kept ReLU", **now),
                "untried": dict(what="never run", paired_with="step3", **now),
                "mish": dict(what="Mish", paired_with="silu", group="design", decided="not chosen", **now)}
    report.write_experiments_md(tmp_path, page, variants)
    text = page.read_text()
    validation, test = text.split("## Validation runs")[1].split("## Test-set runs")
    row = lambda part, name: next(line for line in part.splitlines() if line.startswith(f"| {name} |"))
    # By hand, on validation: silu - step3 = +0.1, +0.2 (mean 0.15, SE 0.05); mish - silu = 0, -0.1. The worst
    # of the last 5 epochs (99.45 four times, then the final): silu - step3 = +0.1, +0.05; mish - silu = 0, 0.
    assert "| +0.150 ± 0.050; worst of last 5: +0.075 ± 0.025 (2 seeds) |" in row(validation, "silu")
    assert "| kept ReLU |" in row(validation, "silu")
    assert "| -0.050 ± 0.050; worst of last 5: +0.000 ± 0.000 (2 seeds, vs silu) |" in row(validation, "mish")
    assert row(validation, "silu").endswith("`python tools/ablations.py silu --seeds 21,22 --jobs 2 --validation` |")
    assert "| 99.35 ± 0.07 | 99.30 | 1 of 2 (fails < 97%) |" in row(validation, "step3")  # 1 - p^2 = 5%
    # On test: silu's runs were made by other code (and commit b), old ones kept no fingerprint.
    assert "not paired: the runs were made by other code" in row(test, "silu")
    assert "at bbbbbbb: `git checkout bbbbbbb`, then `python tools/ablations.py silu" in row(test, "silu")
    assert "not paired: no code fingerprint recorded" in row(test, "old") and "| unknown |" in row(test, "old")
    assert row(test, "old").endswith("| none: retired |")  # no recipe now: no command
    assert "- `untried`: never run" in text and "## silu, seeds 21-22, validation set, aaaaaaa" in text
    # A design's chain of evidence: the comparison that judged it (paired, on validation), then its test runs.
    design = text[text.index("## The designs"):].split("\n## ")[0]
    assert ("- **mish** (7,662 parameters), judged along silu -> mish.\n"
            "  - Validation: -0.050 ± 0.050; worst of last 5: +0.000 ± 0.000 (2 seeds, vs silu); decided: not "
            "chosen.\n  - No test runs.") in design


def test_frontier_table_figure_and_pass_counts_with_their_bounds(tmp_path):
    # step3: 10 seeds passing; tiny: smaller, 10 seeds, one fails; small: 2 seeds passing; silu: no group.
    specs = {"step3": (7662, [99.50] * 10), "tiny": (1595, [99.30] + [99.42] * 9), "small": (3898, [99.50, 99.60]),
             "silu": (7662, [99.50] * 10)}
    for variant, (params, finals) in specs.items():
        (tmp_path / variant / "seeds").mkdir(parents=True)
        for seed, final in enumerate(finals, start=21):
            run = dict(make_run(seed, [99.45] * 4 + [final]), step="step3_aug_sched", params=params,
                       macs=params * 200, threads=1, commit="a" * 40, code_fingerprint="f1")
            for epoch in run["epochs"]:
                epoch["train_seconds"] = 20.0
            (tmp_path / variant / "seeds" / f"step3_aug_sched_seed{seed}.json").write_text(json.dumps(run))
    now = dict(code_fingerprint="f1")  # what a run of this tree would record (no recipe fingerprint in these runs)
    variants = {"step3": dict(what="step 3", paired_with="step3", group="frontier", **now),
                "tiny": dict(what="x0.45", paired_with="step3", group="frontier", **now),
                "small": dict(what="designed", paired_with="tiny", group="design", **now),
                "silu": dict(what="SiLU", paired_with="step3", **now)}
    page = tmp_path / "EXPERIMENTS.md"
    report.write_experiments_md(tmp_path, page, variants)
    text = page.read_text()
    frontier = text[text.index("## The frontier of sizes"):].split("\n## ")[0]
    rows = [line for line in frontier.splitlines() if line.startswith("| ") and "--seeds" in line]
    assert rows == [  # smallest first; silu (no group) is not on the frontier
        "| tiny | frontier | 1,595 | 319,000 | 21-30 | 99.41 ± 0.04 | 99.30-99.42 | 99.30 | 9 of 10 (fails < 39%) | "
        "20.0 (1) | `python tools/ablations.py tiny --seeds 21,22,23,24,25,26,27,28,29,30 --jobs 2` |",
        "| small | design | 3,898 | 779,600 | 21-22 | 99.55 ± 0.07 | 99.50-99.60 | 99.45 | 2 of 2 (fails < 78%) | "
        "20.0 (1) | `python tools/ablations.py small --seeds 21,22 --jobs 2` |",
        "| step3 | frontier | 7,662 | 1,532,400 | 21-30 | 99.50 ± 0.00 | 99.50-99.50 | 99.45 | 10 of 10 (fails < 26%) "
        "| 20.0 (1) | `python tools/ablations.py step3 --seeds 21,22,23,24,25,26,27,28,29,30 --jobs 2` |"]
    assert "![final accuracy against parameters](frontier.png)" in frontier
    assert ("- **small** (3,898 parameters), judged along tiny -> small.\n  - No validation runs.\n"
            "  - Test, seeds 21-22: mean final 99.55%, 2 of 2 (fails < 78%) passing.") in text
    assert (tmp_path / "frontier.png").stat().st_size > 10_000
