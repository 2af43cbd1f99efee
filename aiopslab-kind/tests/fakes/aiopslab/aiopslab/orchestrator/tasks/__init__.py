"""FAKE aiopslab.orchestrator.tasks: the four task types."""

from aiopslab.orchestrator.tasks.analysis import AnalysisTask  # noqa: F401
from aiopslab.orchestrator.tasks.detection import DetectionTask  # noqa: F401
from aiopslab.orchestrator.tasks.localization import LocalizationTask  # noqa: F401
from aiopslab.orchestrator.tasks.mitigation import MitigationTask  # noqa: F401
