from aiopslab.orchestrator.orchestrator import Orchestrator  # noqa: F401
