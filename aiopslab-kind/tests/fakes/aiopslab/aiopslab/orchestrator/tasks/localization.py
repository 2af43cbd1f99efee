"""FAKE aiopslab.orchestrator.tasks.localization.LocalizationTask: the localization task's
description, instructions, actions and base evaluation (TTL + the common keys)."""

from aiopslab.orchestrator.actions.localization import LocalizationActions
from aiopslab.orchestrator.tasks.base import Task


class LocalizationTask(Task):
    task_name = "localization"
    task_desc = """\
            You are an expert DevOps engineer assigned to localize faults in a deployed service.

            Service Details:
            {app_summary}

            You will begin by analyzing the service's state and telemetry.
            You are requested to identify the service(s) where the root cause of the fault lies, and submit one of:
            1. list[str]: list of faulty components (i.e., service names)
            2. list[]: an empty list if no faults were detected
            """
    instructions = """\
            Once you know the faulty services, submit them, for example:

            ```\nsubmit(["service-a"])\n```

            Please respond with only a single API call (a.k.a., action) per turn without any additional words, labels, or prefixes.
            """

    def __init__(self, app):
        super().__init__(app)
        self.actions = LocalizationActions()

    def eval(self, soln, trace, duration):
        self.add_result("TTL", duration)
        self.common_eval(trace)
        return self.results
