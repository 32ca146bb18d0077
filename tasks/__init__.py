"""Benchmarks, one module each, looked up by the name used in configs (``task=NAME``)."""

from __future__ import annotations

import importlib
import pkgutil

from harness.tasks.base import Grade, Task, final_answer_text

__all__ = ["Grade", "Task", "final_answer_text", "get_task", "register", "task_label", "task_names", "task_order"]

_REGISTRY: dict[str, type[Task]] = {}
_INTERNAL = {"base", "data"}


def register(cls: type[Task]) -> type[Task]:
    """Class decorator: make a task available under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name not in _INTERNAL and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


def task_names() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def task_label(name: str) -> str:
    """What tables call a task (its name when it is not registered)."""
    try:
        return get_task(name).label or name
    except ValueError:
        return name


def task_order(name: str) -> tuple:
    """Where a task goes in tables: the paper's tasks first, then the others by name."""
    try:
        return (get_task(name).order, name)
    except ValueError:
        return (1000, name)


def get_task(name: str) -> Task:
    """A task instance by name; an unknown name raises ValueError listing the valid ones."""
    if name not in _REGISTRY:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
    if name not in _REGISTRY:
        _discover()  # a module may register several tasks (e.g. aime24 in aime.py)
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(task_names())}")
    return _REGISTRY[name]()
