"""FAKE aiopslab.orchestrator.actions.localization: the localization task's actions
(every base action, and its submit)."""

from aiopslab.orchestrator.actions.base import TaskActions
from aiopslab.utils.actions import action
from aiopslab.utils.status import SubmissionStatus


class LocalizationActions(TaskActions):
    @staticmethod
    @action
    def submit(faulty_components: list[str]) -> SubmissionStatus:
        """
        Submit your localization solution to the orchestrator for evaluation.

        Args:
            faulty_components (list[str]): The faulty components (service names).

        Returns:
            SubmissionStatus: The status of the submission.
        """
        return SubmissionStatus.VALID_SUBMISSION
