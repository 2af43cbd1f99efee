# FAKE aiopslab.service (see ../../README.md).
