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
    report.write_seeds_md(tmp_path / "expected.md", records)
    assert out.read_text() == (tmp_path / "expected.md").read_text()
    text = out.read_text()
    assert text.index("| 2 |") < text.index("| 4 |")  # in seed order
    assert "# step3_aug_sched over 2 seeds" in text
    assert "3 epochs each, 7,662 parameters, device cpu, 1 thread(s) per run" in text
    paths[0].write_text(json.dumps(dict(records[0], step="step2_bn_gap")))
    code, _, stderr = call(report.main, "seeds", *paths, "--output", tmp_path / "mixed.md")
    assert code == 1 and "different steps" in stderr


def test_paired_difference_uses_only_the_seeds_both_ran():
    baseline = [make_run(seed, [99.0, acc]) for seed, acc in [(1, 99.40), (2, 99.50), (3, 99.60)]]
    variant = [make_run(seed, [99.0, acc]) for seed, acc in [(2, 99.60), (3, 99.80), (9, 90.0)]]
    n, mean, se = report.paired_difference(variant, baseline)
    assert n == 2 and abs(mean - 0.15) < 1e-9 and abs(se - 0.05) < 1e-9  # diffs 0.1, 0.2
    assert report.paired_difference(variant[:1], baseline) is None  # one pair says nothing
    assert report.ranges([21, 22, 23, 25, 27, 28]) == "21-23, 25, 27-28"


def test_experiments_page_is_written_from_the_recorded_runs(tmp_path):
    for variant, finals in [("step3", [99.40, 99.50]), ("silu", [99.50, 99.70]), ("mish", [99.50, 99.60])]:
        (tmp_path / variant / "seeds").mkdir(parents=True)
        for seed, final in zip((21, 22), finals):
            run = dict(make_run(seed, [99.45] * 4 + [final]), step="step3_aug_sched", threads=1)
            for epoch in run["epochs"]:
                epoch["train_seconds"] = 30.0
            (tmp_path / variant / "seeds" / f"step3_aug_sched_seed{seed}.json").write_text(json.dumps(run))
    page = tmp_path / "EXPERIMENTS.md"
    variants = {"step3": ("step 3 unchanged", []), "silu": ("SiLU", []), "untried": ("never run", []),
                "mish": ("Mish", [], "silu")}  # paired with silu, not step 3
    report.write_experiments_md(tmp_path, page, variants)
    text = page.read_text()
    silu = next(line for line in text.splitlines() if line.startswith("| silu |"))
    assert "| 21-22 | 99.60 ± 0.14 | 99.45 | 2 of 2 | +0.150 ± 0.050 (2 seeds) | 30.0 (1) |" in silu
    assert "ablations.py silu --seeds 21,22" in silu
    mish = next(line for line in text.splitlines() if line.startswith("| mish |"))
    assert "| -0.050 ± 0.050 (2 seeds, vs silu) |" in mish  # diffs 0, -0.1
    assert "- `untried`: never run" in text and "## silu" in text
