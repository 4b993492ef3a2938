"""The Optuna side of a sweep: the study in its storage, its sampler and pruner, and a trial's values.

Optuna does the searching, pruning and storing; this module only opens a study
as a sweep needs it (heartbeats, a few seconds' timeout on unreachable databases, one
study per search space), seeds its sampler per trial, and turns the sweep's parameters
into Optuna's suggestions and back into config values.
"""

import logging
import re
import socket
import time
import warnings
from dataclasses import replace

import yaml

from cnnlab.rundir import lock as run_lock
from cnnlab.search import space as spaces
from cnnlab.config.schema import to_plain
from cnnlab.runtime.credentials import redact
from cnnlab.errors import CnnlabError, ConfigError, first_line
from cnnlab.config.keypaths import first_difference

FAILED_TRIAL_LINE = re.compile(r"Trial \d+ failed")  # Optuna's warning, with a traceback, for each failed trial
SURPLUS = "surplus"  # user attribute of a trial that found the sweep's trials all taken when it started (claim_slot)
FAILED = "failed"  # user attribute of a trial that failed for a reason of its own (not killed, not interrupted, not surplus)
SCHEMA_ATTEMPTS = 3  # tries to open a database whose tables another process is creating
HEARTBEAT_S, GRACE_S = 10, 30  # a trial whose process stops beating for 30 s is marked failed by the next that looks


def fail_killed_trials(study):
    """Trials still marked running whose process on this machine is gone (SIGKILL, power loss) are marked failed.

    Optuna's heartbeat would do it too, but only once the grace period has passed and
    another trial starts; a resume right after a kill must not count them as running.
    """
    from optuna.trial import TrialState

    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = trial.user_attrs.get("pid")
        if trial.user_attrs.get("host") == host and isinstance(pid, int) and not run_lock.process_alive(pid):
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise CnnlabError("cnnlab sweep needs Optuna: pip install optuna (it comes with pip install -e .)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for handler in logging.getLogger("optuna").handlers:  # Optuna's own handler, which optuna.logging configures
        handler.addFilter(not_a_failed_trial)  # the same filter once, however often this runs
    return optuna


def not_a_failed_trial(record):
    """Drops Optuna's `[W ...] Trial N failed ...` line and its traceback: the sweep prints its own one line per
    trial and keeps the traceback in the trial's failure.txt. Optuna's other warnings still reach the terminal."""
    return not FAILED_TRIAL_LINE.match(record.getMessage())


def finished_states():
    from optuna.trial import TrialState

    return (TrialState.COMPLETE, TrialState.PRUNED)


def count_finished(study):
    """Completed and pruned trials: what `trials` counts."""
    return len(study.get_trials(deepcopy=False, states=finished_states()))


def slot_holders(study):
    """Trials that hold one of the sweep's `trials` slots: finished, or running and not found surplus."""
    from optuna.trial import TrialState

    states = (*finished_states(), TrialState.RUNNING)
    return [trial for trial in study.get_trials(deepcopy=False, states=states) if not trial.user_attrs.get(SURPLUS)]


def claim_slot(study, number, trials):
    """Whether trial `number` may train: fewer than `trials` trials numbered before it hold a slot.

    Optuna numbers trials in the order the storage creates them, so of two processes that
    start a trial at the same instant, the later-numbered one sees the other and gives way
    (marked SURPLUS, never trained): a study never finishes more than `trials` trials. One
    before it that is still running counts, whether it goes on to finish or fail; where it
    fails, its process goes on and the slot is taken again, so the sweep still ends with
    exactly `trials`.
    """
    return sum(trial.number < number for trial in slot_holders(study)) < trials


def failure_streak(trials, first=0):
    """The longest run of trials in a row, by number from `first` on, that failed for a reason of their own.

    A running trial breaks a run, so the answer only grows as trials end, and every process
    of the study, whenever it asks, agrees on whether the sweep must stop. Trials that were
    surplus, killed or interrupted neither break a run nor extend it: they are no verdict on
    the config.
    """
    longest = current = 0
    for trial in sorted(trials, key=lambda t: t.number):
        if trial.number < first:
            continue
        state = trial.state.name
        if state == "FAIL" and not trial.user_attrs.get(FAILED):
            continue
        current = current + 1 if state == "FAIL" else 0
        longest = max(longest, current)
    return longest


def open_study(plan, space):
    """The plan's study in its storage, created on first use; a study of that name with another space is refused."""
    import optuna

    storage = make_storage(plan["storage"])
    sampler = seeded_per_trial(space)
    pruner = make_pruner(space)
    direction = space.direction
    study = optuna.create_study(storage=storage, study_name=plan["study"], direction=direction, sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    recorded = study.user_attrs.get("space")
    mine = space_record(space)
    if recorded is None:
        study.set_user_attr("space", mine)
        with warnings.catch_warnings():  # experimental in Optuna 5: names the value in optuna-dashboard
            warnings.simplefilter("ignore")
            study.set_metric_names([space.metric])
        recorded = study.user_attrs.get("space")  # processes starting at once: the first write stays, Optuna drops the others
    difference = first_difference(recorded, mine)
    if difference is not None:
        raise ConfigError("sweep", f"the study {plan['study']!r} in {redact(plan['storage'])} was made with another search space "
                                   f"({'sweep.' + difference if difference else 'the whole space'} differs); "
                                   "give another --study name, or the same sweep section")
    return study


def make_storage(url):
    """Optuna's RDB storage with heartbeats, failing within seconds when the database cannot be reached."""
    import optuna
    import sqlalchemy.exc

    if url.startswith(("postgresql", "mysql")):
        engine_kwargs = {"connect_args": {"connect_timeout": 5}}
    else:  # SQLite: worker processes of one machine take turns writing; wait for the lock rather than fail
        engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(1, SCHEMA_ATTEMPTS + 1):
        try:
            with warnings.catch_warnings():  # heartbeat_interval's ExperimentalWarning would be a second line before any error
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_S,
                                                  grace_period=GRACE_S)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as exc:
            # Processes that open an empty database at once race to create Optuna's tables, and PostgreSQL
            # refuses all but one (duplicate key ... pg_type_typname_nsp_index); the tables are there on the next try.
            if attempt < SCHEMA_ATTEMPTS:
                time.sleep(attempt)
                continue
            error = exc
        except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as exc:
            error = exc
        raise CnnlabError(f"--storage {redact(url)}: cannot open the study database: {redact(first_line(error))}") from error


def make_sampler(space):
    import optuna

    if space.sampler == "random":
        return optuna.samplers.RandomSampler(seed=space.seed)
    if space.sampler == "grid":
        return optuna.samplers.GridSampler({param.path: grid_points(param) for param in space.params}, seed=space.seed)
    return optuna.samplers.TPESampler(seed=space.seed)


def seeded_per_trial(space):
    """Optuna's sampler of the space; random and TPE seeded afresh for each trial from (sweep.seed, trial number).

    One seed per process would make every process that joins the study (another machine,
    a --resume) draw the very values the first one drew; trial numbers are unique in a
    study, so each trial draws its own values, the same whichever process trains it.
    """
    # Not the grid: its seed shuffles the grid, whose point numbers every process must read alike, and it
    # already skips the points that other processes have run or are running.
    if space.sampler == "grid":
        return make_sampler(space)
    import numpy as np
    import optuna

    class SeededPerTrial(optuna.samplers.BaseSampler):
        def __init__(self):
            self.sampler = make_sampler(space)

        def before_trial(self, study, trial):
            seed = int(np.random.SeedSequence([space.seed, trial.number]).generate_state(1)[0])
            self.sampler = make_sampler(replace(space, seed=seed))
            self.sampler.before_trial(study, trial)

        def infer_relative_search_space(self, study, trial):
            return self.sampler.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self.sampler.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self.sampler.sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study, trial, state, values):
            self.sampler.after_trial(study, trial, state, values)

    return SeededPerTrial()


def make_pruner(space):
    import optuna

    if space.pruner == "none":
        return optuna.pruners.NopPruner()
    if space.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)


def space_record(space):
    """What must match for a second process to join a study: the parameters and the metric."""
    return {"metric": space.metric, "direction": space.direction,
            "params": {param.path: [param.kind, param.low, param.high, param.step, param.log, labels(param)] for param in space.params}}


def labels(param):
    """Choices as Optuna can store them: scalars as they are, anything else as its YAML text."""
    if param.kind != "choice":
        return None
    return [value if is_scalar(value) else yaml.safe_dump(to_plain(value), default_flow_style=True).strip() for value in param.choices]


def grid_points(param):
    """The grid sampler's values of one parameter, choices by their labels."""
    return labels(param) if param.kind == "choice" else list(spaces.grid_values(param))


def is_scalar(value):
    return value is None or isinstance(value, (bool, int, float, str))


def suggest(trial, param):
    """The trial's value for one parameter, sampled by Optuna, as the config takes it."""
    if param.kind == "int":
        return trial.suggest_int(param.path, param.low, param.high, step=param.step or 1, log=param.log)
    if param.kind == "float":
        value = trial.suggest_float(param.path, param.low, param.high, step=param.step, log=param.log)
        return round(value, 12) if param.step else value  # a step of 0.1 gives 0.30000000000000004 otherwise
    label = trial.suggest_categorical(param.path, labels(param))
    return param.choices[labels(param).index(label)]
