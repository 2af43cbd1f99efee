# FAKE aiopslab package for the aiopslab-kind tests (see ../README.md).
# Empty on purpose, as the real aiopslab/__init__.py is: `import aiopslab`
# alone reads no config, loads no kubeconfig and needs no tiktoken data.
