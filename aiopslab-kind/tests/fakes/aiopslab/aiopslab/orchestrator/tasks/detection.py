"""FAKE aiopslab.orchestrator.tasks.detection.DetectionTask: the detection task's
description, instructions, actions and base evaluation (TTD + the common keys)."""

from aiopslab.orchestrator.actions.detection import DetectionActions
from aiopslab.orchestrator.tasks.base import Task


class DetectionTask(Task):
    task_name = "detection"
    task_desc = """\
            You are an expert DevOps engineer assigned to detect anomalies in a deployed service.

            Service Details:
            {app_summary}

            You will begin by analyzing the service's state and telemetry.
            1. str: "Yes" or "No" to indicate whether there are anomalies detected
            """
    instructions = """\
            If you decide that there are no anomalies:

            ```\nsubmit("No")\n```

            Or, if anomalies are found:

            ```\nsubmit("Yes")\n```

            Please respond with only a single API call (a.k.a., action) per turn without any additional words, labels, or prefixes.
            """

    def __init__(self, app):
        super().__init__(app)
        self.actions = DetectionActions()

    def eval(self, soln, trace, duration):
        self.add_result("TTD", duration)
        self.common_eval(trace)
        return self.results
