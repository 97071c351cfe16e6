"""Bad input and faults: one clear message, no traceback, nothing lost."""
import hashlib
import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import common
import robustness
from conftest import ROOT, assert_no_traceback, call, closed_proxy_env, read_json, run_script, run_step, step_main

QUICK = ["--epochs", "1", "--subset", "2000"]


def copy_mnist(data_dir, tmp_path):
    """The four raw files in a folder of the test's own, with a SHA256SUMS file made from them
    (a folder from torchvision's download has none)."""
    target = tmp_path / "mnist" / "MNIST" / "raw"
    target.mkdir(parents=True)
    sums = []
    for name in common.MNIST_FILES:
        shutil.copy(Path(data_dir, "MNIST", "raw", name), target / name)
        sums.append(f"{hashlib.sha256((target / name).read_bytes()).hexdigest()}  MNIST/raw/{name}")
    (tmp_path / "mnist" / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    return tmp_path / "mnist"


# 1. No data and no network (closed by the test, so that it passes the same with a network).
def test_missing_data_names_the_option_the_variable_and_the_layout(tmp_path, no_network):
    start = time.monotonic()
    code, _, stderr = run_step("step3_aug_sched", tmp_path / "out", tmp_path / "empty", *QUICK)
    assert time.monotonic() - start < 60
    assert code == 1
    assert_no_traceback(stderr)
    assert len(stderr.strip().splitlines()) == 2  # the cause, then what to do
    for words in ("--data-dir", "MNIST_DATA_DIR", "MNIST/raw", "train-images-idx3-ubyte", "could not be downloaded"):
        assert words in stderr
    assert not (tmp_path / "out" / "step3_aug_sched.json").exists()


def test_missing_data_without_a_network_as_a_program(tmp_path):
    result = run_script("step1_skeleton.py", "--device", "cpu", "--data-dir", tmp_path / "empty",
                        "--out", tmp_path / "out", *QUICK, env=closed_proxy_env(), timeout=120)
    assert result.returncode == 1
    assert_no_traceback(result.stderr)
    assert result.stderr.startswith("error: MNIST is not in") and "MNIST_DATA_DIR" in result.stderr


# 2. Truncated or corrupted files are named and never used.
@pytest.mark.parametrize("damage", ["truncate", "header"])
def test_damaged_mnist_file_is_named(tmp_path, data_dir, damage):
    mnist = copy_mnist(data_dir, tmp_path)
    victim = mnist / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    data = bytearray(victim.read_bytes())
    if damage == "truncate":
        data = data[:len(data) // 2]
    elif damage == "header":
        data[0:4] = b"\x00\x00\x08\x01"  # a label file's magic number
    victim.write_bytes(bytes(data))
    code, _, stderr = run_step("step3_aug_sched", tmp_path / "out", mnist, *QUICK)
    assert code == 1
    assert_no_traceback(stderr)
    assert "t10k-images-idx3-ubyte" in stderr
    assert not (tmp_path / "out" / "step3_aug_sched.json").exists()


# 3. Invalid options fail with a usage message before any data is read.
@pytest.mark.parametrize("option", [
    ["--epochs", "0"], ["--batch-size", "-5"], ["--lr", "0"], ["--lr", "nan"], ["--subset", "0"],
    ["--device", "tpu"], ["--seed", "x"], ["--epochs", "three"],
    *([["--device", "cuda"]] if not torch.cuda.is_available() else []),
    *([["--device", "mps"]] if not torch.backends.mps.is_available() else []),
])
def test_invalid_option_is_a_usage_error(tmp_path, option):
    # A data folder that does not exist: reaching the data would print another error.
    code, _, stderr = call(step_main("step2_bn_gap"), "--data-dir", tmp_path / "nowhere", "--out",
                           tmp_path / "out", *option)
    assert code == 2
    assert stderr.startswith("usage:")
    assert option[0] in stderr
    assert "MNIST is not in" not in stderr
    assert not (tmp_path / "out").exists()


# 4. Divergence stops training with the epoch and step, keeping what finished.
def test_divergence_from_the_command_line(tmp_path, data_dir):
    code, _, stderr = run_step("step1_skeleton", tmp_path, data_dir, "--epochs", "2", "--subset", "2000",
                               "--lr", "1e9")
    assert code == 1
    assert_no_traceback(stderr)
    assert "epoch 1" in stderr and "by step" in stderr
    assert read_json(tmp_path / "step1_skeleton.json")["status"] == "diverged"


def test_divergence_after_a_good_epoch_keeps_that_epoch(tmp_path, mnist):
    import step2_bn_gap

    def explode_in_second_epoch(model, args, steps_per_epoch):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 1.0 if step < steps_per_epoch else math.inf)
        return optimizer, schedule

    args = SimpleNamespace(epochs=3, batch_size=100, lr=0.01, subset=1000)
    data = [mnist[0][:1000], mnist[1][:1000], mnist[2][:1000], mnist[3][:1000]]
    path = tmp_path / "run.json"
    with pytest.raises(common.Diverged, match=r"by step \d+ of epoch 2"):
        common.train_one_seed("step2_bn_gap", step2_bn_gap.Net, explode_in_second_epoch, args, data,
                              torch.device("cpu"), 1, path)
    record = read_json(path)
    assert record["status"] == "diverged" and len(record["epochs"]) == 1
    assert math.isfinite(record["epochs"][0]["train_loss"])


def start_step2(tmp_path, data_dir):
    command = [sys.executable, str(ROOT / "step2_bn_gap.py"), "--device", "cpu", "--data-dir",
               str(data_dir), "--out", str(tmp_path), "--subset", "1000", "--epochs", "500"]
    # Ctrl-C as in a terminal: a job started in the background by a non-interactive shell
    # (as CI may run us) inherits an ignored SIGINT, so give the child the default back.
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def stop_when(process, signal_number, ready, timeout=120):
    """Send `signal_number` once ready() holds; return the process's stderr."""
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not ready():
            time.sleep(0.2)
        process.send_signal(signal_number)
        return process.communicate(timeout=60)[1]
    finally:
        process.kill()


# 5. Ctrl-C and SIGTERM keep the finished epochs; files are written atomically; a rerun works.
@pytest.mark.parametrize("signal_number, code, status", [(signal.SIGINT, 130, "interrupted"),
                                                         (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_a_stopped_run_keeps_finished_epochs_and_says_how_it_ended(tmp_path, data_dir, signal_number, code, status):
    process = start_step2(tmp_path, data_dir)
    json_path = tmp_path / "step2_bn_gap.json"
    stderr = stop_when(process, signal_number, lambda: json_path.exists() and read_json(json_path)["epochs"])
    assert process.returncode == code
    assert "Traceback" not in stderr and status.split()[0] in stderr
    record = read_json(json_path)
    assert record["status"] == status and 1 <= len(record["epochs"]) < 500
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_run_stopped_before_its_first_epoch_leaves_its_record(tmp_path, data_dir):
    process = start_step2(tmp_path, data_dir)
    json_path = tmp_path / "step2_bn_gap.json"
    stop_when(process, signal.SIGTERM, json_path.exists)
    assert process.returncode == 143
    record = read_json(json_path)
    assert record["status"] == "terminated (SIGTERM)" and record["epochs"] == []


def test_a_full_disk_while_writing_the_weights_is_one_clear_line(tmp_path, data_dir):
    """A file-size limit (what a full disk looks like to a writer: the write fails) that the JSON
    fits under and the weights (90 kB) do not."""
    import resource

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write with EFBIG, not kill the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (15_000, 15_000))
    command = [sys.executable, str(ROOT / "step1_skeleton.py"), "--device", "cpu", "--data-dir", str(data_dir),
               "--out", str(tmp_path), "--save-model", *QUICK]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, preexec_fn=limit_file_size)
    assert result.returncode == 1
    assert_no_traceback(result.stderr)
    assert result.stderr.strip() == f"error: cannot write {tmp_path / 'step1_skeleton.pt'}: File too large"
    assert read_json(tmp_path / "step1_skeleton.json")["status"] == "complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step1_skeleton.json"]  # no half-written weights


def test_rerun_after_a_stop_completes(tmp_path, data_dir):
    stop_when(start_step2(tmp_path, data_dir), signal.SIGINT, (tmp_path / "step2_bn_gap.json").exists)
    json_path = tmp_path / "step2_bn_gap.json"
    code, _, stderr = run_step("step2_bn_gap", tmp_path, data_dir, *QUICK)
    assert code == 0, stderr
    assert read_json(json_path)["status"] == "complete"


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "results.md"
    common.write_atomically(path, "old\n")

    def fail_halfway(f):
        f.write(b"half of the new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        common.write_atomically(path, save=fail_halfway)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.md"]


# 6. An output folder that cannot be written fails before training.
def test_unwritable_output_folder_fails_before_training(tmp_path, data_dir):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    start = time.monotonic()
    code, stdout, stderr = run_step("step3_aug_sched", blocker / "out", data_dir, "--epochs", "5")
    assert time.monotonic() - start < 60
    assert code == 1
    assert_no_traceback(stderr)
    assert "cannot write to the output folder" in stderr and "--out" in stderr
    assert "epoch" not in stdout


# 7. The same seed twice on the CPU gives the same numbers, augmentation and dropout included.
def test_same_seed_same_metrics(tmp_path, mnist):
    import step3_aug_sched as step3
    args = SimpleNamespace(epochs=2, batch_size=64, lr=0.1, subset=1000)
    data = [mnist[0][:1000], mnist[1][:1000], mnist[2][:1000], mnist[3][:1000]]
    runs = []
    for name in ("a", "b"):
        record, _, _ = common.train_one_seed("step3_aug_sched", step3.Net, step3.make_optimizer, args, data,
                                             torch.device("cpu"), 1, tmp_path / f"{name}.json", step3.AUGMENTATION)
        runs.append([{k: v for k, v in e.items() if k != "train_seconds"} for e in record["epochs"]])
    assert runs[0] == runs[1]
    other, _, _ = common.train_one_seed("step3_aug_sched", step3.Net, step3.make_optimizer, args, data,
                                        torch.device("cpu"), 2, tmp_path / "c.json", step3.AUGMENTATION)
    assert other["epochs"][-1]["train_loss"] != runs[0][-1]["train_loss"]


# 8. Saved weights reproduce the reported accuracy; bad checkpoints are refused by name.
def test_saved_weights_reproduce_test_accuracy(smoke_runs, mnist, data_dir, tmp_path):
    import step1_skeleton
    import step2_bn_gap
    out, _ = smoke_runs
    checkpoint = out / "step2_bn_gap.pt"
    reported = read_json(out / "step2_bn_gap.json")["epochs"][-1]["test_acc"]
    model = robustness.load_checkpoint(checkpoint, "step2_bn_gap", step2_bn_gap.Net())
    assert common.evaluate(model, *mnist[2:])[1] == reported

    with pytest.raises(common.UserError, match="does not fit step1_skeleton"):
        robustness.load_checkpoint(checkpoint, "step1_skeleton", step1_skeleton.Net())
    corrupted = tmp_path / "corrupted.pt"
    corrupted.write_bytes(checkpoint.read_bytes()[:300])
    with pytest.raises(common.UserError, match="corrupted"):
        robustness.load_checkpoint(corrupted, "step2_bn_gap", step2_bn_gap.Net())
    (tmp_path / "step2_bn_gap.pt").write_bytes(corrupted.read_bytes())
    code, _, stderr = call(robustness.main, "--out", tmp_path, "--steps", "step2_bn_gap", "--device", "cpu",
                           "--data-dir", data_dir)
    assert code == 1
    assert_no_traceback(stderr)
    assert "corrupted" in stderr
