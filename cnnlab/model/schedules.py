"""Learning-rate schedules named in a config: `compile.optimizer.learning_rate: {schedule: CosineDecay, ...}`.

Any class of keras.optimizers.schedules by its Keras name (or that name in snake_case,
cosine_decay, as optimizers are named adam), plus OneCycle, which Keras lacks. A schedule
reads the optimizer's `iterations`, which Keras' BackupAndRestore saves with the other
optimizer variables, so a resumed run carries on at the step it stopped at.
"""

import math
from functools import lru_cache

import keras

from cnnlab.errors import ConfigError
from cnnlab.model import keras_names as registry

SCHEDULE_KEY = "schedule"
PATH = "compile.optimizer.learning_rate"
# OneCycle's total_steps, when the config leaves it out: train.epochs × the batches of an epoch, filled in when the run starts
DERIVED_STEPS = {"OneCycle": "total_steps"}


@keras.saving.register_keras_serializable(package="cnnlab")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Leslie Smith's one-cycle policy as fastai and PyTorch's OneCycleLR run it (anneal_strategy "cos"): from
    max_learning_rate / div_factor up to max_learning_rate over the first pct_start of total_steps, then down
    to max_learning_rate / div_factor / final_div_factor, both halves cosine. Registered with Keras, so a
    best.keras whose optimizer holds it loads with its compile state."""

    def __init__(self, max_learning_rate, total_steps, pct_start=0.25, div_factor=25.0, final_div_factor=1e4, name="OneCycle"):
        if not 0 < pct_start < 1:
            raise ValueError(f"`pct_start` must be between 0 and 1 (exclusive). Received: pct_start={pct_start}")
        if not isinstance(total_steps, int) or isinstance(total_steps, bool) or total_steps < 2:
            raise ValueError(f"`total_steps` must be an integer of at least 2. Received: total_steps={total_steps}")
        if max_learning_rate <= 0 or div_factor <= 0 or final_div_factor <= 0:
            raise ValueError("`max_learning_rate`, `div_factor` and `final_div_factor` must be positive. "
                             f"Received: max_learning_rate={max_learning_rate}, div_factor={div_factor}, final_div_factor={final_div_factor}")
        self.max_learning_rate = float(max_learning_rate)
        self.total_steps = total_steps
        self.pct_start = float(pct_start)
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)
        self.name = name

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        peak = self.max_learning_rate
        start = peak / self.div_factor
        end = start / self.final_div_factor
        up_steps = max(1.0, math.floor(self.pct_start * self.total_steps))
        down_steps = max(1.0, self.total_steps - 1 - up_steps)
        up = ops.clip(step / up_steps, 0.0, 1.0)
        down = ops.clip((step - up_steps) / down_steps, 0.0, 1.0)
        rising = end_of_cosine(start, peak, up)
        falling = end_of_cosine(peak, end, down)
        return ops.where(step <= up_steps, rising, falling)

    def get_config(self):
        return {"max_learning_rate": self.max_learning_rate, "total_steps": self.total_steps, "pct_start": self.pct_start,
                "div_factor": self.div_factor, "final_div_factor": self.final_div_factor, "name": self.name}


def end_of_cosine(start, end, fraction):
    """start → end along half a cosine, `fraction` of the way (0..1)."""
    return end + (start - end) * (1.0 + keras.ops.cos(math.pi * fraction)) / 2.0


@lru_cache(maxsize=None)
def schedule_classes():
    """{name: class}: keras.optimizers.schedules' public schedules and OneCycle, each also under its snake_case name."""
    module = keras.optimizers.schedules
    classes = {name: cls for name in dir(module) if name[:1].isupper() and name != "LearningRateSchedule"
               for cls in [getattr(module, name)] if isinstance(cls, type) and issubclass(cls, module.LearningRateSchedule)}
    classes["OneCycle"] = OneCycle
    return {**classes, **{registry.snake_case(name): cls for name, cls in classes.items()}}


def is_schedule(value):
    return isinstance(value, dict)


def schedule_class(spec):
    """The class a `{schedule: NAME, ...}` mapping names, its arguments checked against its signature."""
    cls = registry.lookup(spec.get(SCHEDULE_KEY), schedule_classes(), f"{PATH}.{SCHEDULE_KEY}", "learning-rate schedule")
    registry.check_kwargs(cls, arguments(spec), PATH)
    return cls


def arguments(spec):
    return {key: value for key, value in spec.items() if key != SCHEDULE_KEY}


def make_schedule(spec):
    """The schedule instance. OneCycle's total_steps, where the config leaves it out, is filled in when a run
    starts (with_derived_steps); until then (`cnnlab check`, which knows no data) a stand-in checks the rest."""
    cls = schedule_class(spec)
    kwargs = registry.floats_where_expected(cls, arguments(spec))
    derived = DERIVED_STEPS.get(cls.__name__)
    if derived and derived not in kwargs:
        kwargs[derived] = 2
    try:
        return cls(**kwargs)
    except Exception as exc:  # any failure to construct from config values is the config's fault
        raise ConfigError(registry.narrow_path(PATH, kwargs, exc), registry.keras_message(exc)) from exc


def with_derived_steps(spec, steps):
    """The schedule's mapping with OneCycle's total_steps filled in as `steps`, so config.yaml records the number."""
    cls = schedule_class(spec)
    derived = DERIVED_STEPS.get(cls.__name__)
    if derived is None or derived in spec:
        return spec
    return {**spec, derived: max(2, int(steps))}
