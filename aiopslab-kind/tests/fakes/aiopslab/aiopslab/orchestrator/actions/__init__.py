# FAKE aiopslab.orchestrator.actions (see ../../../README.md).
