"""FAKE aiopslab.orchestrator.tasks.analysis.AnalysisTask: the analysis task's
description, instructions, actions and base evaluation (TTA + the common keys)."""

from aiopslab.orchestrator.actions.analysis import AnalysisActions
from aiopslab.orchestrator.tasks.base import Task


class AnalysisTask(Task):
    task_name = "analysis"
    task_desc = """\
            You are an expert DevOps engineer assigned to do root cause analysis in a deployed service.

            Service Details:
            {app_summary}

            You will begin by analyzing the service's state and telemetry.
            Submit one of:
            1. dict[str, str]: a dictionary with two keys, 'system_level' (one of 'Hardware', 'Operating System', 'Virtualization', 'Application') and 'fault_type' (one of 'Misconfiguration', 'Code Defect', 'Authentication Issue', 'Network/Storage Issue', 'Operation Error', 'Dependency Problem')
            2. str: `None` if no faults were detected
            """
    instructions = """\
            For example:

            ```\nsubmit({"system_level": "Application", "fault_type": "Misconfiguration"})\n```

            Please respond with only a single API call (a.k.a., action) per turn without any additional words, labels, or prefixes.
            """

    def __init__(self, app):
        super().__init__(app)
        self.actions = AnalysisActions()

    def eval(self, soln, trace, duration):
        self.add_result("TTA", duration)
        self.common_eval(trace)
        return self.results
