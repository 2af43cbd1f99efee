"""FAKE aiopslab.observer: like the real package, importing it loads the
kubeconfig named by monitor_config.yaml (`~/.kube/config`) and raises when it
cannot. The real one builds a kubernetes CoreV1Api from it; the fake only
checks the file."""

import pathlib

from aiopslab import _fake
from aiopslab.config import Config

root_path = pathlib.Path(__file__).parent
monitor_config = Config(root_path / "monitor_config.yaml").config

_fake.load_kube_config(config_file=monitor_config["kubernetes_path"])
