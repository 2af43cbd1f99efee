# FAKE aiopslab.service.telemetry (see ../../../README.md).
