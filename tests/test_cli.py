"""Each step end to end from its command line, on a real MNIST subset, and results.md."""
import pytest

from conftest import STEPS, assert_no_traceback, read_json, run_script, run_step

# One short epoch each; settings that learn quickly on few images.
SMOKE = {
    "step1_skeleton": ["--subset", "6000", "--batch-size", "32", "--lr", "0.03"],
    "step2_bn_gap": ["--subset", "6000", "--batch-size", "32"],
    "step3_aug_sched": ["--subset", "6000", "--batch-size", "32"],
}


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory, data_dir):
    """Every step run once for one epoch into one folder, as `make all` would."""
    out = tmp_path_factory.mktemp("results")
    results = {step: run_step(step, out, data_dir, "--epochs", "1", *SMOKE[step]) for step in STEPS}
    return out, results


@pytest.mark.parametrize("step", STEPS)
def test_step_runs_end_to_end_and_writes_its_json(smoke_runs, step):
    out, results = smoke_runs
    result = results[step]
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    assert "receptive field" in result.stdout  # the summary came first
    record = read_json(out / f"{step}.json")
    assert record["step"] == step and record["status"] == "complete"
    assert record["seed"] == 1 and record["device"] == "cpu"
    assert record["params"] > 0 and record["receptive_field"] >= 28
    [epoch] = record["epochs"]
    assert set(epoch) >= {"epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "train_seconds"}
    assert epoch["test_acc"] > 60, "one epoch on 6,000 images should be far above chance (10%)"
    assert epoch["train_acc"] > 30
    assert f"test loss {epoch['test_loss']:.4f} acc {epoch['test_acc']:.2f}%" in result.stdout


@pytest.mark.parametrize("step", STEPS)
def test_step_writes_three_plots(smoke_runs, step):
    out, _ = smoke_runs
    for kind in ("curves", "misclassified", "confusion"):
        png = out / f"{step}_{kind}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 5000


def test_results_md_is_built_from_the_jsons(smoke_runs, tmp_path):
    out, _ = smoke_runs
    md = tmp_path / "results.md"
    result = run_script("common.py", "results", *[out / f"{s}.json" for s in STEPS], "--output", md)
    assert result.returncode == 0, result.stderr
    text = md.read_text()
    for step in STEPS:
        record = read_json(out / f"{step}.json")
        test_acc = record["epochs"][0]["test_acc"]
        row = next(line for line in text.splitlines() if line.startswith(f"| {step} |"))
        assert f"| {record['params']:,} | {record['receptive_field']} |" in row
        assert f"| {test_acc:.2f} | {test_acc:.2f} |" in row  # best and final of one epoch
    assert "seed 1, device cpu" in text
    assert "step3_aug_sched_curves.png" in text


def test_readme_results_section_is_rewritten_from_the_jsons(smoke_runs, tmp_path):
    out, _ = smoke_runs
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:start -->\nold numbers\n<!-- results:end -->\noutro\n")
    result = run_script("common.py", "results", *[out / f"{s}.json" for s in STEPS],
                        "--output", tmp_path / "results.md", "--readme", readme)
    assert result.returncode == 0, result.stderr
    text = readme.read_text()
    assert text.startswith("intro\n<!-- results:start -->\n") and text.endswith("<!-- results:end -->\noutro\n")
    assert "old numbers" not in text
    table = "\n".join(line for line in (tmp_path / "results.md").read_text().splitlines() if line.startswith("|"))
    assert table in text


def test_results_md_without_jsons_is_a_clear_error(tmp_path):
    result = run_script("common.py", "results", tmp_path / "missing.json", "--output", tmp_path / "r.md")
    assert result.returncode != 0
    assert_no_traceback(result)
    assert "missing.json" in result.stderr


def test_several_seeds_write_a_seeds_table(tmp_path, data_dir):
    result = run_step("step3_aug_sched", tmp_path, data_dir, "--epochs", "2", "--seeds", "1,2",
                      "--subset", "2000")
    assert result.returncode == 0, result.stderr
    table = (tmp_path / "seeds.md").read_text()
    for seed in (1, 2):
        record = read_json(tmp_path / "seeds" / f"step3_aug_sched_seed{seed}.json")
        accs = [e["test_acc"] for e in record["epochs"]]
        assert f"| {seed} | {accs[0]:.2f} | {accs[1]:.2f} |" in table
    assert "mean" in table and "of 2" in table


def test_help_explains_every_option():
    result = run_script("step3_aug_sched.py", "--help")
    assert result.returncode == 0
    for option in ("--epochs", "--batch-size", "--lr", "--seed", "--seeds", "--device", "--data-dir",
                   "--subset", "--out", "--save-model", "--evaluate", "MNIST_DATA_DIR"):
        assert option in result.stdout
