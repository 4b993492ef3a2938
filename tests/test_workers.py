"""cnnlab.runtime.processes: worker processes started once with their share of the cores, that survive a job's death."""

import os
import signal
import time
from pathlib import Path

import pytest

from cnnlab.runtime import processes as workers
from cnnlab.runtime.tf_logs import is_start_up_log
from cnnlab.runtime.processes import Failure, Pool

from conftest import TINY_DIGITS
from test_quiet import cnnlab

TESTS = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def workers_find_the_test_jobs(monkeypatch):
    """Spawned workers import `workers_jobs` by name, so tests/ goes on the path they inherit."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(TESTS))


@pytest.fixture(scope="module")
def four_jobs_on_two_workers():
    """Four short jobs on a pool of two workers with a budget of 4 cores: [(job, result)], and the pool's pids."""
    with Pool(2, "workers_jobs:report", cores=4) as pool:
        pids = pool.pids
        for n in range(4):
            pool.submit({"n": n, "sleep": 0.2})
        results = list(pool.results())
    return results, pids


def test_every_job_is_reported_once_with_its_result(four_jobs_on_two_workers):
    results, _ = four_jobs_on_two_workers
    assert sorted(job["n"] for job, _ in results) == [0, 1, 2, 3]
    assert all(result["job"] == job["n"] for job, result in results)


def test_two_workers_each_started_once_serve_every_job(four_jobs_on_two_workers):
    results, pids = four_jobs_on_two_workers
    assert len(set(pids)) == 2 and os.getpid() not in pids
    assert {result["pid"] for _, result in results} == set(pids)  # four jobs, two processes: each served several


def test_each_worker_gets_an_equal_share_of_the_core_budget(four_jobs_on_two_workers):
    results, _ = four_jobs_on_two_workers
    assert {result["cores"] for _, result in results} == {"2"}  # 4 cores // 2 workers


def test_tensorflow_starts_in_each_worker_before_its_first_job(four_jobs_on_two_workers):
    results, _ = four_jobs_on_two_workers
    assert all(result["tensorflow"] for _, result in results)  # workers_jobs itself imports no TensorFlow


def test_a_worker_killed_mid_job_fails_that_job_and_a_new_worker_takes_the_next(tmp_path):
    pid_file = tmp_path / "pid"
    with Pool(1, "workers_jobs:report") as pool:
        pool.submit({"n": 0, "pid_file": str(pid_file)})
        deadline = time.monotonic() + 120
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        killed = int(pid_file.read_text())
        os.kill(killed, signal.SIGKILL)
        ((job, result),) = list(pool.results(timeout=60))
        assert job["n"] == 0 and result == Failure(f"its worker process stopped (exit code {-signal.SIGKILL})")
        pool.submit({"n": 1})
        ((job, result),) = list(pool.results(timeout=120))
    assert job["n"] == 1 and result["pid"] != killed


def test_a_job_that_raises_is_a_failure_and_the_others_complete():
    results = list(workers.run_jobs([{"n": 0}, {"n": 1}], "workers_jobs:fail", processes=2))
    assert sorted(result.reason for _, result in results) == [f"ValueError: job {n} cannot be done" for n in (0, 1)]
    for job, result in results:  # formatted in the worker, whose frames do not cross the pipe
        assert result.traceback.startswith("Traceback (most recent call last):")
        assert 'workers_jobs.py", line' in result.traceback and f"ValueError: job {job['n']} cannot be done" in result.traceback


def test_one_process_runs_the_jobs_here_one_after_another():
    results = list(workers.run_jobs([{"n": 0}, {"n": 1}], "workers_jobs:report", processes=1))
    assert [(job["n"], result["pid"]) for job, result in results] == [(0, os.getpid()), (1, os.getpid())]


def test_a_stopping_result_starts_no_further_job():
    results = list(workers.run_jobs([{"n": n} for n in range(3)], "workers_jobs:report", stop=lambda result: result["job"] == 1))
    assert [job["n"] for job, _ in results] == [0, 1]


@pytest.mark.parametrize("run", [lambda job: job, "workers_jobs", "workers_jobs:no such"])
def test_a_job_function_a_worker_cannot_import_by_name_is_refused(run):
    with pytest.raises(ValueError, match=r"^expected a job function as 'module:function' or a module-level function; Received: run="):
        Pool(2, run)


def test_compare_workers_print_none_of_tensorflows_start_up_lines(write_config, tmp_path):
    config = write_config(TINY_DIGITS.replace("epochs: 2", "epochs: 1"))
    result = cnnlab("compare-optimizers", config, "--runs-dir", tmp_path / "runs", "-o", "adam", "-o", "sgd", "--jobs", "2")
    assert result.returncode == 0, result.stderr
    assert not [line for line in result.stderr.splitlines(keepends=True) if is_start_up_log(line)], result.stderr
    assert "2 runs to train, 2 at a time" in result.stdout
