# FAKE aiopslab.service.apps (see ../../../README.md).
