"""Shared test helpers. Tests train on real MNIST: MNIST_DATA_DIR, else ../shared/mnist."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
STEPS = ["step1_skeleton", "step2_bn_gap", "step3_aug_sched"]


def find_data_dir():
    # Absolute, because some tests run a script from a temporary folder.
    data_dir = Path(os.environ.get("MNIST_DATA_DIR", ROOT.parent / "shared" / "mnist")).resolve()
    if not (data_dir / "MNIST" / "raw" / "t10k-images-idx3-ubyte").exists():
        pytest.fail(f"real MNIST not found in {data_dir}: set MNIST_DATA_DIR")
    return data_dir


@pytest.fixture(scope="session")
def data_dir():
    return find_data_dir()


@pytest.fixture(scope="session")
def mnist(data_dir):
    """The four MNIST tensors on the CPU, loaded once for the in-process tests."""
    import common
    return common.load_mnist(data_dir, common.pick_device("cpu"))


def run_script(script, *args, cwd=None, env=None, timeout=300):
    """Run a script of the project as a user would; returns the CompletedProcess."""
    path = script if Path(script).is_absolute() else ROOT / script
    return subprocess.run([sys.executable, str(path), *map(str, args)], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def run_step(step, out, data_dir, *args, **kwargs):
    return run_script(f"{step}.py", "--device", "cpu", "--data-dir", data_dir, "--out", out, *args, **kwargs)


def read_json(path):
    return json.loads(Path(path).read_text())


def assert_no_traceback(result):
    assert "Traceback" not in result.stderr, result.stderr
