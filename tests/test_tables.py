"""The arithmetic behind results.md and seeds.md, on small made-up histories."""
import json

import pytest

import common


def test_epochs_at_target_counts_and_groups_epochs():
    assert common.epochs_at_target([99.3, 99.4, 99.5, 99.2, 99.41]) == "3: 2-3, 5"
    assert common.epochs_at_target([99.0, 99.39]) == "0"


def test_holds_from_is_the_start_of_the_final_run_at_target():
    assert common.holds_from([99.5, 99.3, 99.4, 99.45]) == 3
    assert common.holds_from([99.5, 99.45, 99.3]) is None
    assert common.holds_from([99.4] * 3) == 1


def make_run(seed, accuracies):
    return {"seed": seed, "epochs": [{"test_acc": a} for a in accuracies]}


def test_seeds_table_summarises_pass_mean_std_and_worst():
    runs = [make_run(1, [98.0, 99.41, 99.42, 99.43, 99.44, 99.45, 99.50]),
            make_run(2, [98.0, 99.50, 99.39, 99.50, 99.50, 99.50, 99.60])]
    table = common.seeds_table(runs)
    assert "| seed | ep 3 | ep 4 | ep 5 | ep 6 | ep 7 |" in table
    assert "| 1 | 99.42 | 99.43 | 99.44 | 99.45 | 99.50 | 2 | 99.50 | yes |" in table
    assert "| 2 | 99.39 | 99.50 | 99.50 | 99.50 | 99.60 | 4 | 99.60 | NO |" in table
    assert "mean 99.55% ± 0.07" in table  # sample std of 99.50 and 99.60
    assert "all seeds: 99.39%" in table
    assert "1 of 2" in table


@pytest.mark.parametrize("text,expected", [("1,2,3", [1, 2, 3]), ("7", [7])])
def test_seed_list_parses(text, expected):
    assert common.seed_list(text) == expected


def test_seeds_command_builds_one_table_from_separate_runs(tmp_path):
    from conftest import run_script
    records = [dict(make_run(seed, accs), step="step3_aug_sched", params=7662, device="cpu",
                    date="2026-11-22 14:02")
               for seed, accs in [(4, [99.0, 99.5, 99.6]), (2, [99.0, 99.3, 99.45])]]
    paths = []
    for record in records:
        paths.append(tmp_path / f"seed{record['seed']}.json")
        paths[-1].write_text(json.dumps(record))
    out = tmp_path / "seeds.md"
    run = run_script("common.py", "seeds", *paths, "--output", out)
    assert run.returncode == 0, run.stderr
    common.write_seeds_md(tmp_path / "expected.md", sorted(records, key=lambda r: r["seed"]))
    assert out.read_text() == (tmp_path / "expected.md").read_text()
    text = out.read_text()
    assert text.index("| 2 |") < text.index("| 4 |")  # in seed order
    assert "# step3_aug_sched over 2 seeds" in text and "3 epochs each, 7,662 parameters, device cpu" in text
    paths[0].write_text(json.dumps(dict(records[0], step="step2_bn_gap")))
    mixed = run_script("common.py", "seeds", *paths, "--output", tmp_path / "mixed.md")
    assert mixed.returncode != 0 and "different steps" in mixed.stderr
