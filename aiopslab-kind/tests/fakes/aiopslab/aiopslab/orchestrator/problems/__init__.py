# FAKE aiopslab.orchestrator.problems (see ../../../README.md).
