"""Training data for each task, and the task objects the training loop drives."""

from __future__ import annotations

from interp.tasks.comparison import ComparisonTask
from interp.tasks.composition import CompositionTask
from interp.tasks.induction import InductionTask
from interp.tasks.modular import ModAddTask
from interp.tasks.text import TextTask

TASKS = {"induction": InductionTask, "modadd": ModAddTask, "text": TextTask, "composition": CompositionTask,
         "comparison": ComparisonTask}


def make_task(options):
    """The task object for ``options.task`` (``interp.presets.TrainOptions``)."""
    try:
        return TASKS[options.task](options)
    except KeyError:
        raise ValueError(f"unknown task {options.task!r}; known: {', '.join(sorted(TASKS))}") from None
