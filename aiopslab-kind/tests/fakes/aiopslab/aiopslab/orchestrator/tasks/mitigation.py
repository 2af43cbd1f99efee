"""FAKE aiopslab.orchestrator.tasks.mitigation.MitigationTask: the mitigation task's
description, instructions, actions and base evaluation (TTM + the common keys)."""

from aiopslab.orchestrator.actions.mitigation import MitigationActions
from aiopslab.orchestrator.tasks.base import Task


class MitigationTask(Task):
    task_name = "mitigation"
    task_desc = """\
            You are an expert DevOps engineer assigned to mitigate anomalies in a deployed service.

            Service Details:
            {app_summary}

            You will begin by analyzing the service's state and telemetry.
            Mitigate any detected anomalies with the available APIs, then submit.
            """
    instructions = """\
            Once your mitigation is complete and ready for evaluation, call:

            ```\nsubmit()\n```

            The mitigation submit() takes no parameters; a submission is valid once made, correct or not.

            Please respond with only a single API call (a.k.a., action) per turn without any additional words, labels, or prefixes.
            """

    def __init__(self, app):
        super().__init__(app)
        self.actions = MitigationActions()

    def eval(self, soln, trace, duration):
        self.add_result("TTM", duration)
        self.common_eval(trace)
        return self.results
