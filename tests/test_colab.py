"""The generated single-file steps: up to date, self-contained, and runnable alone."""
import json
import shutil

import pytest

from conftest import ROOT, STEPS, assert_no_traceback, read_json, run_script


def test_generated_files_are_up_to_date():
    result = run_script("tools/make_colab.py", "--check")
    assert result.returncode == 0, result.stderr + result.stdout


@pytest.mark.parametrize("step", STEPS)
def test_generated_files_import_no_project_module(step):
    source = (ROOT / "colab" / f"{step}.py").read_text()
    for module in ["common", *STEPS]:
        assert f"import {module}" not in source and f"from {module} " not in source
    notebook = json.loads((ROOT / "colab" / f"{step}.ipynb").read_text())
    code = "".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code")
    compile(code, f"{step}.ipynb", "exec")
    assert "class Net" in code and "def train_epoch" in code and "main_guard(lambda: main([]))" in code


def test_generated_step_runs_from_an_empty_folder(tmp_path, data_dir):
    script = tmp_path / "step3_aug_sched.py"
    shutil.copy(ROOT / "colab" / "step3_aug_sched.py", script)
    result = run_script(script, "--device", "cpu", "--data-dir", data_dir, "--epochs", "1",
                        "--subset", "3000", "--batch-size", "32", cwd=tmp_path, env={"PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    record = read_json(tmp_path / "results" / "step3_aug_sched.json")
    assert record["status"] == "complete" and record["params"] < 8000
    assert record["epochs"][0]["test_acc"] > 60
    assert (tmp_path / "results" / "step3_aug_sched_curves.png").exists()
