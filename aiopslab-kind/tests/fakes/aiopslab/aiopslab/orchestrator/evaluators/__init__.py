# FAKE aiopslab.orchestrator.evaluators (see ../../../README.md).
