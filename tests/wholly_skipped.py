"""A pytest plugin: in CI (`CI` set), a test module none of whose tests ran fails the session.

A module skipped whole checks nothing while the run stays green: a package or system
binary CI lacks, a skipif that is always true there, a file named on .ci/run's command
line whose every test `-m "not tensorflow_only"` deselects. Such a module either gets
what it needs in .ci/run, or says at its top why CI may skip all of it, in a line a
reader of CI's log can judge:

    CI_MAY_SKIP = "needs a GPU, which CI has not"

conftest.py loads this plugin (`-p wholly_skipped` does too); tests/test_wholly_skipped.py
runs it on small generated test folders, alone and under pytest-xdist (`-n 2`, as CI runs the
suite). There each worker collects and deselects every module itself and only the reports of
the tests it ran reach the controlling process, so the workers send what they saw
(`workeroutput`) and the controller judges the modules on all of it.
"""

import ast
import os
from pathlib import Path

import pytest

REASON_NAME = "CI_MAY_SKIP"


WORKER_OUTPUT = "wholly_skipped"


def pytest_configure(config):
    if os.environ.get("CI"):
        config.pluginmanager.register(WhollySkippedModules(config.rootpath, worker=hasattr(config, "workerinput")),
                                      "wholly-skipped-modules")


class WhollySkippedModules:
    def __init__(self, rootpath, worker=False):
        self.rootpath = rootpath
        self.worker = worker  # an xdist worker reports what it saw; the controlling process judges
        self.not_run = set()  # modules (their node ids) with a test skipped or deselected
        self.ran = set()  # modules at least one of whose tests ran
        self.offenders = []

    def pytest_collectreport(self, report):
        # a module that skips itself as it is imported (pytest.importorskip at its top) has no tests to report
        if report.skipped and report.nodeid.endswith(".py"):
            self.not_run.add(report.nodeid)

    def pytest_deselected(self, items):
        self.not_run.update(item.nodeid.split("::")[0] for item in items)

    def pytest_runtest_logreport(self, report):
        module = report.nodeid.split("::")[0]
        if report.skipped and not hasattr(report, "wasxfail"):  # an xfail ran its test
            self.not_run.add(module)
        elif report.when == "call" or report.failed:
            self.ran.add(module)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error):
        """An xdist worker's modules: what it deselected or skipped, and what it ran."""
        seen = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT, {})
        self.not_run.update(seen.get("not_run", ()))
        self.ran.update(seen.get("ran", ()))

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session):
        if self.worker:
            session.config.workeroutput[WORKER_OUTPUT] = {"not_run": sorted(self.not_run), "ran": sorted(self.ran)}
            return
        self.offenders = [module for module in sorted(self.not_run)
                          if module not in self.ran and not skip_reason(self.rootpath / module)]
        if self.offenders and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter):
        if not self.offenders:
            return
        terminalreporter.section("test modules none of whose tests ran in CI", red=True)
        for module in self.offenders:
            terminalreporter.write_line(f"{module}: no test ran (each was skipped or deselected); give CI what it needs in .ci/run, "
                                        f"or say why it may skip them all: {REASON_NAME} = \"...\" at the module's top")


def skip_reason(path):
    """The module's `CI_MAY_SKIP = "..."`, read without importing it (a module skipped on import may not import); None without one."""
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None
    for node in tree.body:
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == REASON_NAME for t in node.targets)
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str) and node.value.value.strip()):
            return node.value.value
    return None
