"""FAKE aiopslab.orchestrator.actions.analysis: the analysis task's actions
(every base action, and its submit)."""

from aiopslab.orchestrator.actions.base import TaskActions
from aiopslab.utils.actions import action
from aiopslab.utils.status import SubmissionStatus


class AnalysisActions(TaskActions):
    @staticmethod
    @action
    def submit(analysis: dict[str, str]) -> SubmissionStatus:
        """
        Submit your analysis solution to the orchestrator for evaluation.

        Args:
            analysis (dict[str, str]): A dictionary with two keys: 'system_level' and 'fault_type'.

        Returns:
            SubmissionStatus: The status of the submission.
        """
        return SubmissionStatus.VALID_SUBMISSION
