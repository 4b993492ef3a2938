"""tests/wholly_skipped.py: in CI, a test module none of whose tests ran fails the run, unless it says why it may not.

Each test runs pytest with the plugin on a folder of small generated test modules, in a
fresh process, so that what it checks is pytest's exit code as CI sees it.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

SKIPPED_WHOLE = """\
import pytest

@pytest.mark.skip(reason="no thing here")
def test_a():
    pass

def test_b():
    pytest.skip("nor here")
"""
RUNS = "def test_c():\n    pass\n"

# module name → its text; each of these leaves at least one test that ran, or says why CI may skip it
PASSING = {
    "test_reason": 'CI_MAY_SKIP = "needs a GPU, which CI has not"\n' + SKIPPED_WHOLE,
    "test_partly": SKIPPED_WHOLE + "\n" + RUNS,
    "test_xfail": "import pytest\n\n@pytest.mark.xfail(strict=True)\ndef test_x():\n    assert False\n",  # an xfail ran
    "test_partly_deselected": "import pytest\n\n@pytest.mark.slow\ndef test_m():\n    pass\n\n" + RUNS,
    "test_runs": RUNS,
}
# none of these runs a test, and none gives a reason
FAILING = {
    "test_deselected": "import pytest\n\n@pytest.mark.slow\ndef test_m():\n    pass\n",  # -m "not slow" deselects it whole
    "test_skipped": SKIPPED_WHOLE,
    "test_missing": 'import pytest\n\npytest.importorskip("no_such_module_here")\n\n' + RUNS,  # skipped as it is imported
    "test_blank_reason": 'CI_MAY_SKIP = " "\n' + SKIPPED_WHOLE,
}


def run_pytest(folder, modules, ci=True, workers=0):
    """pytest on `modules` written to `folder`, as CI runs it (`CI` set, `workers` xdist processes) or not."""
    for name, text in modules.items():
        (folder / f"{name}.py").write_text(text)
    (folder / "pytest.ini").write_text("[pytest]\nmarkers = slow: deselected here\n")
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    env.update(PYTHONPATH=str(HERE), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")  # the generated tests need no installed plugin
    if ci:
        env["CI"] = "true"
    xdist = ["-p", "xdist", "-n", str(workers), "--dist", "loadfile"] if workers else []
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "wholly_skipped", "-p", "no:cacheprovider", *xdist, "-q",
                           "-m", "not slow", "."], cwd=folder, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("workers", [0, 2], ids=["one-process", "xdist-2-workers"])
def test_in_ci_modules_skipped_whole_without_a_reason_fail_the_run_and_are_named(tmp_path, workers):
    result = run_pytest(tmp_path, {**PASSING, **FAILING}, workers=workers)
    assert result.returncode == 1, result.stdout
    named = sorted(line.partition(".py:")[0] for line in result.stdout.splitlines() if ".py: no test ran" in line)
    assert named == sorted(FAILING)


@pytest.mark.parametrize("workers", [0, 2], ids=["one-process", "xdist-2-workers"])
def test_in_ci_a_run_whose_every_module_ran_a_test_or_says_why_passes(tmp_path, workers):
    result = run_pytest(tmp_path, PASSING, workers=workers)
    assert result.returncode == 0, result.stdout
    assert "no test ran" not in result.stdout


def test_outside_ci_a_module_skipped_whole_passes(tmp_path):
    assert run_pytest(tmp_path, FAILING, ci=False).returncode == 0
