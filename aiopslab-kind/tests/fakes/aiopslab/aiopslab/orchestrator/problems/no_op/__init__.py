# FAKE aiopslab.orchestrator.problems.no_op (see ../../../../README.md).
