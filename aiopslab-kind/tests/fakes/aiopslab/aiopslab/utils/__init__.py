# FAKE aiopslab.utils (see ../../README.md).
