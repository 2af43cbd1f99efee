"""FAKE aiopslab.orchestrator.actions.detection: the detection task's actions
(every base action, and its submit)."""

from aiopslab.orchestrator.actions.base import TaskActions
from aiopslab.utils.actions import action
from aiopslab.utils.status import SubmissionStatus


class DetectionActions(TaskActions):
    @staticmethod
    @action
    def submit(has_anomaly: str) -> SubmissionStatus:
        """
        Submit your detection solution to the orchestrator for evaluation.

        Args:
            has_anomaly (str): "Yes" if anomalies are detected, "No" otherwise.

        Returns:
            SubmissionStatus: The status of the submission.
        """
        return SubmissionStatus.VALID_SUBMISSION
