"""The generated single-file steps: up to date, self-contained, runnable alone, and the
notebook shows its figures inline."""
import json
import shutil

import nbformat
import pytest
from nbclient import NotebookClient

import make_colab
from conftest import ROOT, STEPS, assert_no_traceback, read_json, run_script


def test_generated_files_are_up_to_date():
    stale = [step for step in STEPS for path, text in zip(
        (ROOT / "colab" / f"{step}.py", ROOT / "colab" / f"{step}.ipynb"), make_colab.build(step))
        if not path.exists() or path.read_text() != text]
    assert not stale, "run `make colab`"


@pytest.mark.parametrize("step", STEPS)
def test_generated_files_import_no_project_module_and_stay_short(step):
    source = (ROOT / "colab" / f"{step}.py").read_text()
    for module in ["common", *STEPS]:
        assert f"import {module}" not in source and f"from {module} " not in source
    assert len(source.splitlines()) <= 500
    notebook = json.loads((ROOT / "colab" / f"{step}.ipynb").read_text())
    # The file as written, against the schema: nbformat.read and nbformat.validate would add missing cell ids.
    schema = nbformat.validator.get_validator(version=notebook["nbformat"], version_minor=notebook["nbformat_minor"])
    assert [error.message for error in schema.iter_errors(notebook)] == []
    code = "".join("".join(c["source"]) + "\n" for c in notebook["cells"] if c["cell_type"] == "code")
    compile(code, f"{step}.ipynb", "exec")
    assert "class Net" in code and "def train_epoch" in code and "main_guard(lambda: main(ARGS))" in code


def test_generated_step_runs_from_an_empty_folder(tmp_path, data_dir):
    script = tmp_path / "step3_aug_sched.py"
    shutil.copy(ROOT / "colab" / "step3_aug_sched.py", script)
    result = run_script(script, "--device", "cpu", "--data-dir", data_dir, "--epochs", "1",
                        "--subset", "3000", "--batch-size", "32", cwd=tmp_path, env={"PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result.stderr)
    record = read_json(tmp_path / "results" / "step3_aug_sched.json")
    assert record["status"] == "complete" and record["params"] < 8000
    assert record["commit"] is None and record["repository"] == "none: not run from a git repository"
    assert record["constants"]["AUGMENTATION"] == {"degrees": 10.0, "zoom": 0.1, "shift": 2.0}
    assert record["epochs"][0]["test_acc"] > 60


def test_notebook_shows_summary_progress_and_figures_inline(tmp_path, data_dir):
    notebook = nbformat.read(ROOT / "colab" / "step2_bn_gap.ipynb", as_version=4)
    [args_cell] = [c for c in notebook.cells if c.source == "ARGS = []"]
    args_cell.source = (f"ARGS = ['--data-dir', {str(data_dir)!r}, '--device', 'cpu', '--epochs', '1', "
                        f"'--subset', '1000', '--batch-size', '32']")
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    train, figures = notebook.cells[-2].outputs, notebook.cells[-1].outputs
    text = "".join(o.get("text", "") for o in train)
    assert "| RF in | RF out |" in text and "epoch  1/1" in text and "final test accuracy" in text
    images = lambda outputs: [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images(train)) == 0 and len(images(figures)) == 3  # curves, receptive field, misclassified digits
    assert "receptive field" in "".join(o.get("text", "") for o in figures)
    for figure in ("curves", "receptive_field", "misclassified"):
        assert (tmp_path / "results" / f"step2_bn_gap_{figure}.png").exists()


def test_notebook_reads_the_shared_code_one_titled_section_at_a_time():
    notebook = json.loads((ROOT / "colab" / "step3_aug_sched.ipynb").read_text())
    titles = [c["source"][0].strip() for c in notebook["cells"] if c["source"][0].startswith("### ")]
    assert titles == ["### Settings", "### Options", "### Data", "### Augmentation", "### Receptive fields",
                      "### Training", "### Outputs", "### One run", "### What the network sees"]
    code_cells = [len("".join(c["source"]).splitlines()) for c in notebook["cells"] if c["cell_type"] == "code"]
    assert max(code_cells) <= 120  # no wall of code
