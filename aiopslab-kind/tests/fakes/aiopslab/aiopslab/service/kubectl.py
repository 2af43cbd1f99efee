"""FAKE KubeCtl: like the real one it loads a kubeconfig when constructed:
context `kind-$AIOPSLAB_CLUSTER` when that variable is set, else the current
context of $KUBECONFIG (or ~/.kube/config). It only checks the file and
context exist; it never talks to a cluster."""

import os
from pathlib import Path


class KubeCtl:
    def __init__(self):
        path = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
        if not os.path.isfile(path):
            raise RuntimeError(f"Invalid kube-config file. No configuration found at {path}")
        text = Path(path).read_text(encoding="utf-8")
        cluster = os.environ.get("AIOPSLAB_CLUSTER")
        self.context = f"kind-{cluster}" if cluster else None
        if self.context and f"name: {self.context}" not in text:
            raise RuntimeError(f"Invalid kube-config file. Context {self.context} not found in {path}")
        self.kubeconfig = path
