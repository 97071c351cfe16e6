"""The arithmetic behind results.md and seeds.md, on small made-up histories."""
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
