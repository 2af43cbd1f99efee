"""FAKE aiopslab.service.apps.base.Application: an application's metadata
(service/metadata/*.json), its summary for the task description, namespace
creation and the default cleanup (delete the whole namespace), as the real one."""

import json

from aiopslab import _fake
from aiopslab.paths import TARGET_MICROSERVICES


class Application:
    def __init__(self, config_file):
        self.config_file = config_file
        self.name = None
        self.namespace = None
        self.helm_deploy = False
        self.helm_configs = {}
        self.k8s_deploy_path = None

    def load_app_json(self):
        metadata = self.get_app_json()
        self.name = metadata["Name"]
        self.namespace = metadata["Namespace"]
        if "K8S Deploy Path" in metadata:
            self.k8s_deploy_path = TARGET_MICROSERVICES / metadata["K8S Deploy Path"]

    def get_app_json(self):
        with open(self.config_file, encoding="utf-8") as f:
            return json.load(f)

    def get_app_summary(self):
        metadata = self.get_app_json()
        operations = "\n".join(f"  - {op}" for op in metadata.get("Supported Operations", []))
        return (
            f"Service Name: {metadata.get('Name', '')}\nNamespace: {metadata.get('Namespace', '')}\n"
            f"Description: {metadata.get('Desc', '')}\nSupported Operations:\n{operations}"
        )

    def create_namespace(self):
        """Creates the namespace when it is missing (the real apps do so when constructed)."""
        self.kubectl.create_namespace_if_not_exist(self.namespace)

    def cleanup(self):
        """Deletes the application's namespace and waits until it is gone (raises on timeout)."""
        _fake.record("app_cleanup", self.namespace)
        _fake.delay("cleanup")
        self.kubectl.delete_namespace(self.namespace)
