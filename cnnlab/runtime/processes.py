"""Worker processes started once, each with an equal share of the cores: used by compare and sweep alike.

A worker is a spawned process that takes its share of the core budget (`cores.give_cores`),
starts Keras on the parent's backend (`backend.start`: TensorFlow without its start-up log
lines), imports the job function by its "module:function" name and then runs one job after
another, each sent through a pipe, until it is sent None. The share, the backend and the
function come first, before any job is unpickled, so that no module a job or its function
imports can start TensorFlow loudly or outside the share; this module itself imports neither
Keras nor any module that would.

The pool knows nothing of what a job is or what its function returns, only that both
pickle. Where a job has no result of its own (its worker died, or its function raised),
the pool hands back a `Failure` in its place, so one job can never stop the others.
"""

import importlib
import time
from dataclasses import dataclass

from cnnlab.runtime.cores import give_cores, usable_cores
from cnnlab.errors import format_traceback, one_line

WORKER_GRACE_S = 10  # Ctrl-C reaches the workers themselves; give them this long before passing it on as SIGTERM
WORKER_STOP_S = 120  # then this long to finish their job (train writes its status) before they are killed


@dataclass(frozen=True)
class Failure:
    """What a job yields instead of its function's result: its worker died, or the function raised."""

    reason: str  # one line
    interrupted: bool = False  # the function was stopped by Ctrl-C or SIGTERM rather than failing
    traceback: str = ""  # the function's traceback, formatted in the worker (an exception's frames do not pickle)


def function_name(run):
    """`run` as "module:function": a name as it is, a module-level function by its own name.

    A worker imports the function by that name, so a lambda, a nested function or one
    defined in __main__ (which a spawned process does not run) is refused.
    """
    if isinstance(run, str):
        module, sep, name = run.partition(":")
    else:
        module, sep, name = getattr(run, "__module__", None), ":", getattr(run, "__qualname__", "")
    if not module or module == "__main__" or not sep or not name.isidentifier():
        raise ValueError(f"expected a job function as 'module:function' or a module-level function; Received: run={run!r}")
    return f"{module}:{name}"


def load_function(name):
    module, _, function = function_name(name).partition(":")
    return getattr(importlib.import_module(module), function)


def call(function, job):
    """The function's result for `job`, or a Failure where it raised; Ctrl-C is handed back and raised again."""
    try:
        return function(job), None
    except KeyboardInterrupt as exc:
        return Failure("stopped by the user", interrupted=True), exc
    except Exception as exc:
        return Failure(f"{type(exc).__name__}: {one_line(exc)}", traceback=format_traceback(exc)), None


def run_jobs(jobs, run, processes=1, stop=None, cores=None):
    """Yields (job, result) per job as it finishes: in this process one after another, or in `processes` workers.

    One process, or one job, runs here, as if the function were called in a loop; more
    start min(processes, len(jobs)) workers, sharing `cores` as Pool does. A result (or
    Failure) for which `stop(result)` is true starts no further job (the running ones finish). On Ctrl-C the running jobs are
    stopped, yielded, and KeyboardInterrupt is raised again.
    """
    jobs = list(jobs)
    if not jobs:
        return
    stop = stop or (lambda result: False)
    if processes <= 1 or len(jobs) == 1:
        function = run if callable(run) else load_function(run)
        for job in jobs:
            result, interrupt = call(function, job)
            yield job, result
            if interrupt is not None:
                raise interrupt
            if stop(result):
                return
        return
    with Pool(min(processes, len(jobs)), run, cores=cores) as pool:
        for job in jobs:
            pool.submit(job)
        for job, result in pool.results():
            yield job, result
            if stop(result):
                pool.cancel()


class Pool:
    """`processes` workers running `run` ("module:function" or a module-level function) on the jobs submitted.

    Use it as a context manager: the workers start on entering (each with
    `cores // processes` of the budget, `cores` defaulting to this process's usable
    cores) and stop on leaving, a busy one after its job is stopped as on Ctrl-C.
    """

    def __init__(self, processes, run, cores=None):
        import multiprocessing

        if processes < 1:
            raise ValueError(f"expected at least 1 worker process; Received: processes={processes!r}")
        self.run = function_name(run)
        self.processes = processes
        self.share = max(1, (cores or usable_cores()) // processes)
        # spawn, not fork: a forked TensorFlow runtime (already started in the parent) can deadlock
        self.context = multiprocessing.get_context("spawn")
        self.queue = []
        self.workers = []

    def __enter__(self):
        try:
            for _ in range(self.processes):
                self.workers.append(Worker(self.context, self.share, self.run))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info):
        self.close()

    @property
    def pids(self):
        """The worker processes' ids, in worker order (a replaced worker has a new one)."""
        return [worker.process.pid for worker in self.workers]

    @property
    def busy(self):
        return sum(worker.job is not None for worker in self.workers)

    @property
    def idle(self):
        """How many more jobs would start at once: workers without a job, less the jobs already waiting."""
        return max(0, len(self.workers) - self.busy - len(self.queue))

    def submit(self, job):
        """Starts `job` on a free worker, or queues it for the next one that results() frees."""
        self.queue.append(job)
        self.start_queued()

    def cancel(self):
        """Drops the jobs that have not started and returns them; the running ones go on."""
        dropped, self.queue = self.queue, []
        return dropped

    def results(self, timeout=None):
        """Yields (job, result) as jobs finish, until none is running or waiting, or `timeout` s pass without one.

        Jobs submitted meanwhile are run too. A worker that died fails its job (a Failure)
        and is replaced. On Ctrl-C nothing new starts, the running jobs are stopped and
        yielded, then KeyboardInterrupt is raised again.
        """
        try:
            while True:
                self.start_queued()
                if not self.busy:
                    return
                finished = wait_for_results(self.workers, timeout=timeout)
                if not finished:
                    return
                yield from finished
        except KeyboardInterrupt:
            self.cancel()
            yield from stop_busy_workers(self.workers)
            raise

    def start_queued(self):
        for worker in self.workers:
            if self.queue and worker.job is None:
                worker.give(self.queue.pop(0))

    def close(self):
        """Stops every worker; a busy one's job is stopped first and its result dropped."""
        self.queue = []
        stop_busy_workers(self.workers)
        for worker in self.workers:
            worker.close()


class Worker:
    """A spawned process, fed one job at a time through a pipe; `job` is the one it is running."""

    def __init__(self, context, share, run):
        self.context = context
        self.share = share
        self.run = run
        self.job = None
        self.start()

    def start(self):
        self.conn, child = self.context.Pipe()
        self.process = self.context.Process(target=worker_loop, args=(child, self.share, self.run), daemon=True)
        self.process.start()
        child.close()

    def give(self, job):
        try:
            self.conn.send(job)
        except OSError:  # it died while idle: start another
            self.restart()
            self.conn.send(job)
        self.job = job

    def take(self, replace=True):
        """(job, result) of the finished job; a worker that died instead fails its job (and is replaced)."""
        job, self.job = self.job, None
        try:
            return job, self.conn.recv()
        except (EOFError, OSError):
            self.process.join(timeout=5)
            code = self.process.exitcode
            if replace:
                self.restart()
            return job, Failure(f"its worker process stopped (exit code {code})")

    def restart(self):
        self.conn.close()
        self.process.join(timeout=5)
        self.start()

    def close(self):
        try:
            self.conn.send(None)
        except (OSError, ValueError):  # already dead, or its pipe already closed
            pass
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def wait_for_results(workers, timeout=None, replace=True):
    from multiprocessing.connection import wait

    busy = {worker.conn: worker for worker in workers if worker.job is not None}
    return [busy[conn].take(replace) for conn in wait(list(busy), timeout=timeout)] if busy else []


def stop_busy_workers(workers):
    """Results of the busy workers once they have stopped: SIGTERM after a grace period, SIGKILL as a last resort."""
    results = []
    started = time.monotonic()
    signalled = False
    while any(worker.job is not None for worker in workers):
        results += wait_for_results(workers, timeout=0.5, replace=False)
        waited = time.monotonic() - started
        if not signalled and waited > WORKER_GRACE_S:
            for worker in workers:
                if worker.job is not None:
                    worker.process.terminate()  # train turns SIGTERM into a clean, interrupted stop
            signalled = True
        if waited > WORKER_GRACE_S + WORKER_STOP_S:
            for worker in workers:
                if worker.job is not None:
                    worker.process.kill()
            results += wait_for_results(workers, timeout=5, replace=False)
            break
    return results


def worker_loop(conn, share, run):
    """The body of a worker process: its share, TensorFlow and `run` first, then each job it is sent until None."""
    try:
        init_worker(share)
        function = load_function(run)
        while True:
            job = conn.recv()
            if job is None:
                return
            result, interrupt = call(function, job)
            conn.send(result)
            if interrupt is not None:
                return  # Ctrl-C: the parent stops the pool; this worker's job is reported
    except (KeyboardInterrupt, EOFError, OSError):
        return  # Ctrl-C while idle (the parent handles it), or the parent is gone


def init_worker(share):
    """Makes `share` cores the worker's whole budget, then starts Keras on the parent's backend in it (TensorFlow
    without its start-up lines).

    `train` turns that budget into the backend's threads and, on TensorFlow, the batch split
    (`backend.share_cores`, `loop.batch_parts`), so a worker's jobs stay inside their share
    instead of each taking the machine's cores. The backend starts here once, not in each
    job; the worker inherits $KERAS_BACKEND, which the parent's --backend set.
    """
    from cnnlab.runtime import backend

    give_cores(share)
    backend.start()
