# FAKE aiopslab.orchestrator (see ../../README.md). As the real package,
# importing it pulls in the whole orchestrator: config.yml, ~/.kube/config
# (through aiopslab.observer) and tiktoken's cl100k_base data.
from .orchestrator import Orchestrator  # noqa: F401
