# FAKE aiopslab.generators.workload (see ../../../README.md).
