# FAKE aiopslab.orchestrator.problems.misconfig_app (see ../../../../README.md).
