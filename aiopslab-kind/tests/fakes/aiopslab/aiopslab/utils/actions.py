"""FAKE aiopslab.utils.actions: the decorators marking action methods and
`get_actions(task)`, which maps each action name of a task to its docstring."""

import importlib


def action(method):
    method.is_action = True
    return method


def read(method):
    method.is_action = True
    method.action_type = "read"
    return method


def write(method):
    method.is_action = True
    method.action_type = "write"
    return method


def get_actions(task, subtype=None):
    module = importlib.import_module("aiopslab.orchestrator.actions." + task)
    actions_class = getattr(module, task.title() + "Actions")
    found = {}
    for name in dir(actions_class):
        method = getattr(actions_class, name)
        if not (callable(method) and getattr(method, "is_action", False)):
            continue
        if subtype and getattr(method, "action_type", None) != subtype:
            continue
        found[name] = (method.__doc__ or "").strip()
    return found
