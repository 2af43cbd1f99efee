# FAKE aiopslab.orchestrator.problems.k8s_target_port_misconfig (see ../../../../README.md).
