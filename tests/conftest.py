"""Shared test helpers. Tests train on real MNIST, found where the steps look for it:
MNIST_DATA_DIR, else the project's data/ folder, downloaded there once when missing.

Most tests call a script's `main` in this process (the command line parsed the same way,
without starting Python and torch again); a subprocess is used only where the process
itself is what is tested (exit codes from the interpreter, Ctrl-C, a copied script)."""
import contextlib
import importlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]
STEPS = ["step1_skeleton", "step2_bn_gap", "step3_aug_sched"]
# One short epoch each on a subset, with settings that learn quickly on few images.
SMOKE = {
    "step1_skeleton": ["--subset", "6000", "--batch-size", "32", "--lr", "0.03"],
    "step2_bn_gap": ["--subset", "6000", "--batch-size", "32"],
    "step3_aug_sched": ["--subset", "6000", "--batch-size", "32"],
}


def find_data_dir():
    """The folder the steps would use (absolute: some tests run a script from elsewhere); when
    MNIST is not there, it is downloaded there by the steps' own loader."""
    import common
    data_dir = Path(os.environ.get(common.DATA_DIR_ENV, ROOT / "data")).resolve()
    try:
        common.load_mnist(data_dir, common.pick_device("cpu"), subset=1)  # checks, downloads if missing
        return data_dir
    except common.UserError as error:
        problem = str(error)
    pytest.fail(f"the tests need real MNIST in {data_dir} (the {common.DATA_DIR_ENV} environment variable, "
                f"else data/ in the project): {problem}", pytrace=False)


def refuse_connections(*args, **kwargs):
    raise OSError(101, "Network is unreachable (closed by the test)")


@pytest.fixture
def no_network(monkeypatch):
    """No connection can be opened in this process (what a machine without a network sees), and
    subprocesses started with `closed_proxy_env()` reach none either."""
    import socket
    monkeypatch.setattr(socket, "create_connection", refuse_connections)


def closed_proxy_env():
    """Environment for a subprocess whose every HTTP(S) request goes to a closed local port."""
    import socket
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proxy = f"http://127.0.0.1:{port}"
    return {name: proxy for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy")} | {
        "no_proxy": "", "NO_PROXY": ""}


@pytest.fixture(scope="session")
def data_dir():
    return find_data_dir()


@pytest.fixture(scope="session")
def mnist(data_dir):
    """The four MNIST tensors on the CPU, loaded once for the in-process tests."""
    import common
    return common.load_mnist(data_dir, common.pick_device("cpu"))


def call(main, *argv):
    """Run a script's `main` (a step's, or a tool's) as its command line would, through
    common.main_guard; returns (exit code, stdout, stderr)."""
    import common
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            common.main_guard(lambda: main([str(a) for a in argv]))
        except SystemExit as exit:
            code = exit.code
            if isinstance(code, str):  # as the interpreter does: the message to stderr, exit code 1
                print(code, file=sys.stderr)
                code = 1
    return code, out.getvalue(), err.getvalue()


def step_main(step):
    return importlib.import_module(step).main


def run_step(step, out, data_dir, *args):
    """A step's command line, in process: --device cpu, the data, the output folder."""
    return call(step_main(step), "--device", "cpu", "--data-dir", data_dir, "--out", out, *args)


@pytest.fixture(scope="session")
def smoke_runs(tmp_path_factory, data_dir):
    """Every step trained once, one epoch on a subset, with its weights saved, into one
    folder as `make all` would; {step: (exit code, stdout, stderr)}."""
    out = tmp_path_factory.mktemp("results")
    return out, {step: run_step(step, out, data_dir, "--epochs", "1", "--save-model", *SMOKE[step])
                 for step in STEPS}


def run_script(script, *args, cwd=None, env=None, timeout=300):
    """Run a script of the project in a new process; returns the CompletedProcess."""
    path = script if Path(script).is_absolute() else ROOT / script
    return subprocess.run([sys.executable, str(path), *map(str, args)], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def read_json(path):
    return json.loads(Path(path).read_text())


def assert_no_traceback(text):
    assert "Traceback" not in text, text
