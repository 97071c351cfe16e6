"""Every command the pages name runs: each `make` target, each command in the README, each row command of
EXPERIMENTS.md, in its cheapest honest form (one epoch on a few hundred images, one seed, one repeat), in a copy
of the project so that nothing committed is rewritten."""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ablations
from conftest import ROOT, assert_no_traceback, call

README = (ROOT / "README.md").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()
QUICK = ["--epochs", "1", "--subset", "256"]


def readme_commands():
    """The README's commands: the lines of its bash blocks and its inline code spans that start a program."""
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", README, flags=re.S))
    starts = ("make ", ".venv/bin/python ", "MNIST_DATA_DIR=")
    return list(dict.fromkeys(c for c in lines + spans if c.startswith(starts)))


def documented_targets():
    """The Makefile's documented targets: its header, one `# make TARGET` line each."""
    return re.findall(r"^# make (\w+)", MAKEFILE, re.M)


def test_every_target_is_documented_and_every_named_target_exists():
    phony = set(re.search(r"^\.PHONY: (.*)$", MAKEFILE, re.M).group(1).split()) - {"$(STEPS)"}
    assert set(documented_targets()) == phony
    named = {shlex.split(c)[-1] for c in readme_commands() if re.match(r"(\w+=\S+ )*make \w+$", c)}
    assert named and named <= phony


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A copy of the working tree with its history, where a command may rewrite what it likes."""
    copy = tmp_path_factory.mktemp("tree")
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    shutil.copytree(ROOT / ".git", copy / ".git")
    return copy


def make(tree, target, **variables):
    """`make TARGET` in the copy, with this interpreter for its environment (a stand-in that make sees as built)."""
    venv = tree / "venv-stand-in"
    venv.mkdir(exist_ok=True)
    (venv / ".installed").touch()  # newer than requirements.txt: make installs nothing
    assignments = [f"{k}={v}" for k, v in dict(VENV=venv, PYTHON=sys.executable, **variables).items()]
    result = subprocess.run(["make", "--no-print-directory", "-C", str(tree), target, *assignments],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert_no_traceback(result.stderr)
    return result


def has_commit(commit):
    return subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=ROOT).returncode == 0


def epochs_of(path):
    record = json.loads(Path(path).read_text())
    return len(record["epochs"]), record["settings"]["subset"]


def test_every_make_target_runs(tree, data_dir, monkeypatch):
    """Each documented target but `make test`, which is what runs this."""
    monkeypatch.setenv("MNIST_DATA_DIR", str(data_dir))  # as the README's `MNIST_DATA_DIR=... make all`
    quick = dict(STEP_ARGS=" ".join(QUICK), SEEDS=41, DEV_SEEDS=21, JOBS=1)
    results, experiments = tree / "results", tree / "results" / "experiments"
    readme_before = (tree / "README.md").read_text()
    make(tree, "seeds", **quick)  # first: make all's table quotes SEEDS
    assert epochs_of(experiments / "step3" / "seeds" / "step3_aug_sched_seed41.json") == (1, 256)
    assert "| 41 |" in (tree / "results.md").read_text()
    make(tree, "all", **quick)
    for step in ("step1_skeleton", "step2_bn_gap", "step3_aug_sched"):
        assert epochs_of(results / f"{step}.json") == (1, 256)
        assert (results / f"{step}.pt").exists() and (results / f"{step}_receptive_field.png").exists()
    assert (tree / "README.md").read_text() != readme_before  # its table, from these one-epoch runs
    for target, written in (("robustness", results / "robustness.md"), ("results", tree / "results.md"),
                            ("experiments", tree / "EXPERIMENTS.md")):
        written.unlink()
        make(tree, target, **quick)
        assert written.exists(), target
    make(tree, "frontier", **quick)
    for variant in re.search(r"^FRONTIER := (.*)$", MAKEFILE, re.M).group(1).split():
        assert epochs_of(experiments / variant / "seeds" / "step3_aug_sched_seed21.json") == (1, 256)
    (tree / "colab" / "step1_skeleton.py").unlink()
    make(tree, "colab")
    assert (tree / "colab" / "step1_skeleton.py").read_text() == (ROOT / "colab" / "step1_skeleton.py").read_text()
    base = re.search(r"^BENCH_BASE \?= (\w+)$", MAKEFILE, re.M).group(1)
    if not has_commit(base):  # a shallow clone: against this tree's own commit instead
        base = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    make(tree, "bench", BENCH_ARGS="--subset 256 --repeats 1", BENCH_BASE=base)
    bench = (results / "bench.md").read_text()
    assert f"| {base} |" in bench and "the first 256 training images" in bench
    make(tree, "clean")
    assert not list(results.glob("*.pt")) and not (tree / "venv-stand-in").exists()
    deleted = subprocess.run(["git", "ls-files", "--deleted"], cwd=tree, capture_output=True, text=True).stdout
    assert deleted == ""  # nothing a commit holds


@pytest.mark.parametrize("command", [c for c in readme_commands() if c.startswith(".venv/bin/python")])
def test_every_python_command_in_the_readme_runs(command, tree, data_dir, tmp_path):
    argv = shlex.split(command)[1:]
    if "--help" not in argv and argv[0] != "backprop/backprop_by_hand.py":  # a training run: one epoch on a few
        argv += [*QUICK, "--out", str(tmp_path)] + (["--seeds", "41"] if "ablations.py" in argv[0] else [])  # images
    result = subprocess.run([sys.executable, *argv], cwd=tree, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "MNIST_DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert_no_traceback(result.stderr)


def experiments_commands():
    """(variant, command cell) for each row of EXPERIMENTS.md whose last cell is a command or says there is none."""
    rows = [line.strip("| ").split(" | ") for line in (ROOT / "EXPERIMENTS.md").read_text().splitlines()
            if line.startswith("| ") and line.endswith(" |")]
    return [(row[0], row[-1]) for row in rows if "tools/ablations.py" in row[-1] or row[-1] == "none: retired"]


def test_experiments_md_has_row_commands():
    assert len(experiments_commands()) >= 10


@pytest.fixture(scope="module")
def listed_at(tmp_path_factory):
    """{commit: what `python tools/ablations.py --list` prints in that commit's files}, filled as asked."""
    cache = {}

    def listed(commit):
        if commit not in cache:
            folder = tmp_path_factory.mktemp(commit)
            archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
            result = subprocess.run([sys.executable, "tools/ablations.py", "--list"], cwd=folder,
                                    capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, result.stderr[-3000:]
            cache[commit] = result.stdout
        return cache[commit]
    return listed


@pytest.mark.parametrize("variant, cell", experiments_commands())
def test_every_row_command_in_experiments_md_runs(variant, cell, data_dir, tmp_path, listed_at):
    if cell == "none: retired":  # the row says so and prints no command
        assert variant not in ablations.VARIANTS
        return
    command = re.search(r"`(python tools/ablations\.py [^`]+)`", cell).group(1)
    argv = shlex.split(command)[2:]
    assert argv[0] == variant
    checkout = re.search(r"`git checkout (\w+)`, then", cell)
    if checkout:  # the runs' code is that commit's: its variants name this one
        if not has_commit(checkout.group(1)):
            pytest.skip(f"{checkout.group(1)} is not in this clone (shallow)")
        assert variant in listed_at(checkout.group(1)).split()
        return
    first_seed = argv[argv.index("--seeds") + 1].split(",")[0]
    code, stdout, stderr = call(ablations.main, *argv, "--seeds", first_seed, "--jobs", "1", "--out", tmp_path,
                                "--device", "cpu", "--data-dir", data_dir, *QUICK)
    assert code == 0, stderr
    assert list(tmp_path.glob("seeds/*.json"))
