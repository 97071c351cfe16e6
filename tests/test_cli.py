"""Each step end to end from its command line, on a real MNIST subset, and results.md."""
import importlib
import subprocess

import pytest
import torch

import figures
import report
from conftest import ROOT, STEPS, assert_no_traceback, call, read_json, run_script, step_main


@pytest.mark.parametrize("step", STEPS)
def test_step_runs_end_to_end_and_writes_its_json(smoke_runs, step):
    out, results = smoke_runs
    code, stdout, stderr = results[step]
    assert code == 0, stderr
    assert_no_traceback(stderr)
    assert "receptive field" in stdout  # the summary came first
    record = read_json(out / f"{step}.json")
    assert record["step"] == step and record["status"] == "complete"
    assert record["seed"] == 1 and record["device"] == "cpu" and record["threads"] >= 1
    assert record["params"] > 0 and record["receptive_field"] >= 28
    # What made the run: this checkout's commit, the step as it is, its constants, the options.
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert record["commit"] == head and isinstance(record["uncommitted_changes"], bool)
    assert record["variant"] == step[:5] and record["torch"] == torch.__version__
    assert record["constants"]["SETTINGS"] == importlib.import_module(step).SETTINGS
    assert record["settings"]["subset"] == 6000 and record["settings"]["epochs"] == 1
    [epoch] = record["epochs"]
    assert set(epoch) >= {"epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "train_seconds"}
    assert epoch["test_acc"] > 60, "one epoch on 6,000 images should be far above chance (10%)"
    assert epoch["train_acc"] > 30
    assert f"test loss {epoch['test_loss']:.4f} acc {epoch['test_acc']:.2f}%" in stdout
    assert f"final test accuracy {epoch['test_acc']:.2f}%" in stdout


def test_provenance_flags_changed_code_not_the_runs_own_outputs(tmp_path, monkeypatch):
    import common
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    (tmp_path / "tiny_step.py").write_text("class Net:\n    pass\n")
    for command in (["init", "-q"], ["add", "tiny_step.py"], ["commit", "-qm", "tiny step"]):
        subprocess.run(git + command, check=True)
    monkeypatch.syspath_prepend(str(tmp_path))
    tiny = importlib.import_module("tiny_step")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "tiny_step.json").write_text("{}")  # a run's output: untracked
    (tmp_path / "results.md").write_text("old")  # a committed output that a run rewrites (make all)
    for command in (["add", "results.md"], ["commit", "-qm", "results"]):
        subprocess.run(git + command, check=True)
    (tmp_path / "results.md").write_text("new")
    record = common.provenance("tiny_step", tiny.Net, torch.device("cpu"), "tiny")
    assert len(record["commit"]) == 40 and record["uncommitted_changes"] is False
    (tmp_path / "tiny_step.py").write_text("class Net:\n    changed = True\n")
    assert common.provenance("tiny_step", tiny.Net, torch.device("cpu"), "tiny")["uncommitted_changes"] is True


@pytest.mark.parametrize("step", STEPS)
def test_step_writes_its_record_and_weights_and_the_figures_tool_draws_from_them(smoke_runs, step, data_dir):
    out, _ = smoke_runs
    assert (out / f"{step}.pt").stat().st_size > 1000
    code, stdout, stderr = call(figures.main, "--out", out, "--data-dir", data_dir, "--steps", step)
    assert code == 0, stderr
    assert "weighs half of its input within the central" in stdout
    for kind in ("curves", "receptive_field", "misclassified"):
        png = out / f"{step}_{kind}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 5000


def test_the_step_script_runs_as_a_program(tmp_path, data_dir):
    # The one run through `python step.py`: the __main__ block and main_guard's exit code.
    result = run_script("step2_bn_gap.py", "--device", "cpu", "--data-dir", data_dir, "--out", tmp_path,
                        "--epochs", "1", "--subset", "500")
    assert result.returncode == 0, result.stderr
    assert read_json(tmp_path / "step2_bn_gap.json")["status"] == "complete"


def test_results_md_is_built_from_the_jsons(smoke_runs, tmp_path):
    out, _ = smoke_runs
    md = tmp_path / "results.md"
    code, _, stderr = call(report.main, "results", *[out / f"{s}.json" for s in STEPS], "--output", md)
    assert code == 0, stderr
    text = md.read_text()
    for step in STEPS:
        record = read_json(out / f"{step}.json")
        test_acc = record["epochs"][0]["test_acc"]
        row = next(line for line in text.splitlines() if line.startswith(f"| {step} |"))
        assert f"| {record['params']:,} | {record['receptive_field']} | {record['macs'] / 1e6:.2f} M |" in row
        assert f"| **{test_acc:.2f}** | {test_acc:.2f} |" in row  # final and best of one epoch
    assert "seed 1, device cpu" in text
    assert "step3_aug_sched_curves.png" in text


def test_results_md_quotes_the_seeds_and_robustness_tables(smoke_runs, tmp_path):
    out, _ = smoke_runs
    (tmp_path / "seeds").mkdir()
    for seed in (1, 2, 3):  # seed 3 is in the folder but not asked for: it must not be mixed in
        record = read_json(out / "step3_aug_sched.json")
        record["seed"], record["epochs"][-1]["test_acc"] = seed, 99.0 + seed / 10
        (tmp_path / "seeds" / f"step3_aug_sched_seed{seed}.json").write_text(report.json.dumps(record))
    robustness_md = tmp_path / "robustness.md"
    robustness_md.write_text("# Robustness: made up\n\n| test digits | a |\n|---|---:|\n| as they are | 1.00 |\n")
    code, _, stderr = call(report.main, "results", *[out / f"{s}.json" for s in STEPS], "--output",
                           tmp_path / "results.md", "--seeds-folder", tmp_path, "--seeds", "1,2",
                           "--robustness-md", robustness_md)
    assert code == 0, stderr
    text = (tmp_path / "results.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| step3_aug_sched |"))
    assert "| 99.15, " in row and "0 of 2 |" in row  # mean of 99.1 and 99.2; none passes 99.4
    seeds = text.split("over seeds 1-2", 1)[1].split("## ", 1)[0]  # the seeds section
    assert "| 1 | " in seeds and "| 2 | " in seeds and "| 3 | " not in seeds
    assert "## Robustness: made up" in text and "robustness.png" in text
    assert "![test accuracy per epoch, every seed]" in text  # one line per seed, beside the table
    assert (tmp_path / "seeds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    minutes = sum(read_json(out / f"{s}.json")["seconds"] for s in STEPS) / 60
    assert f"Measured: the three steps trained and tested in {minutes:.0f} minutes" in text
    for step in STEPS:  # the receptive-field table as the run printed it, and its figure
        assert report.format_summary(read_json(out / f"{step}.json")["layers"]) in text
        assert f"{step}_receptive_field.png" in text


def test_readme_results_section_is_rewritten_from_the_jsons(smoke_runs, tmp_path):
    out, _ = smoke_runs
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:start -->\nold numbers\n<!-- results:end -->\noutro\n")
    code, _, stderr = call(report.main, "results", *[out / f"{s}.json" for s in STEPS],
                           "--output", tmp_path / "results.md", "--readme", readme)
    assert code == 0, stderr
    text = readme.read_text()
    assert text.startswith("intro\n<!-- results:start -->\n") and text.endswith("<!-- results:end -->\noutro\n")
    assert "old numbers" not in text
    table = (tmp_path / "results.md").read_text().split("\n\n")[2]  # the results table, after the title and source
    assert table.startswith("| step |") and table in text


def test_results_md_without_jsons_is_a_clear_error(tmp_path):
    code, _, stderr = call(report.main, "results", tmp_path / "missing.json", "--output", tmp_path / "r.md")
    assert code == 1
    assert_no_traceback(stderr)
    assert "missing.json" in stderr


def test_help_explains_every_option():
    code, stdout, _ = call(step_main("step3_aug_sched"), "--help")
    assert code == 0
    for option in ("--epochs", "--batch-size", "--lr", "--seed", "--device", "--data-dir",
                   "--subset", "--out", "--save-model", "MNIST_DATA_DIR"):
        assert option in stdout


def test_mnist_read_from_its_files_is_what_torchvision_reads(mnist, data_dir):
    """common.load_mnist reads the IDX files itself (importing torchvision takes seconds): the same
    digits and labels as torchvision's MNIST, normalised, and a subset is the first N."""
    import torchvision
    import common
    for train, images, labels in ((True, *mnist[:2]), (False, *mnist[2:])):
        dataset = torchvision.datasets.MNIST(data_dir, train=train)
        assert torch.equal(images, ((dataset.data.float() / 255 - common.MNIST_MEAN) / common.MNIST_STD)[:, None])
        assert torch.equal(labels, dataset.targets)
    subset = common.load_mnist(data_dir, torch.device("cpu"), subset=100)
    assert torch.equal(subset[0], mnist[0][:100]) and torch.equal(subset[1], mnist[1][:100])
    assert torch.equal(subset[2], mnist[2])  # the test set is always whole
