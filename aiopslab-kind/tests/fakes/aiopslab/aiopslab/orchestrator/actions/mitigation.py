"""FAKE aiopslab.orchestrator.actions.mitigation: the mitigation task's actions
(every base action, and its submit)."""

from aiopslab.orchestrator.actions.base import TaskActions
from aiopslab.utils.actions import action
from aiopslab.utils.status import SubmissionStatus


class MitigationActions(TaskActions):
    @staticmethod
    @action
    def submit() -> SubmissionStatus:
        """
        Submit your mitigation solution to the orchestrator for evaluation.

        Args:
            None (the mitigation submit takes no parameters)

        Returns:
            SubmissionStatus: The status of the submission.
        """
        return SubmissionStatus.VALID_SUBMISSION
