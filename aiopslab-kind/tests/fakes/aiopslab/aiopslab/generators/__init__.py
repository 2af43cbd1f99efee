# FAKE aiopslab.generators (see ../../README.md).
