"""FAKE aiopslab.service.telemetry.prometheus.Prometheus: the real class's
deploy/teardown sequence, with a tiny local chart
(observer/prometheus/prometheus: one busybox Deployment in `observe`) instead
of the real Prometheus chart.

deploy(): skip when `helm status prometheus -n observe` says deployed;
otherwise delete a leftover PVC, uninstall a leftover release, apply the PVC
when missing, `helm install` and wait for the `observe` pods (raises on
timeout). teardown(): uninstall, delete the PVC."""

import json
import logging

from aiopslab import _fake
from aiopslab.paths import BASE_DIR, PROMETHEUS_METADATA
from aiopslab.service.helm import Helm
from aiopslab.service.kubectl import KubeCtl


class Prometheus:
    def __init__(self):
        self.config_file = PROMETHEUS_METADATA
        self.load_service_json()

    def load_service_json(self):
        with open(self.config_file, encoding="utf-8") as f:
            metadata = json.load(f)
        self.name = metadata["Name"]
        self.namespace = metadata["Namespace"]
        self.helm_configs = dict(metadata.get("Helm Config", {}))
        if "chart_path" in self.helm_configs:
            self.helm_configs["chart_path"] = str(BASE_DIR / self.helm_configs["chart_path"])
        self.pvc_config_file = str(BASE_DIR / metadata["PersistentVolumeClaimConfig"])

    def deploy(self):
        if self._is_prometheus_running():
            print("Prometheus is already running. Skipping redeployment.")
            _fake.record("prometheus_already_running")
            return
        _fake.record("prometheus_deploy")
        _fake.delay("prometheus")
        self._delete_pvc()
        Helm.uninstall(**self.helm_configs)
        if not self._pvc_exists(self._pvc_name()):
            self._apply_pvc()
        Helm.install(**self.helm_configs)
        Helm.assert_if_deployed(self.namespace)

    def teardown(self):
        _fake.record("prometheus_teardown")
        Helm.uninstall(**self.helm_configs)
        self._delete_pvc()

    def _pvc_name(self):
        # The fake's PVC file is a plain manifest: read `name:` under metadata.
        with open(self.pvc_config_file, encoding="utf-8") as f:
            for line in f:
                if line.strip().startswith("name:"):
                    return line.split(":", 1)[1].strip()
        raise ValueError(f"no metadata.name in {self.pvc_config_file}")

    def _apply_pvc(self):
        KubeCtl().exec_command(f"kubectl apply -f {self.pvc_config_file} -n {self.namespace}")

    def _delete_pvc(self):
        # As the real one: looks for (and deletes) the PVC in the current
        # namespace, although _apply_pvc puts it in `observe`.
        name = self._pvc_name()
        if KubeCtl().exec_command(f"kubectl get pvc {name} --ignore-not-found"):
            KubeCtl().exec_command(f"kubectl delete pvc {name}")

    def _pvc_exists(self, pvc_name):
        result = KubeCtl().exec_command(f"kubectl get pvc {pvc_name}")
        return not ("No resources found" in result or "Error" in result)

    def _is_prometheus_running(self):
        try:
            status = Helm.status(release_name=self.name.lower(), namespace=self.namespace)
        except RuntimeError:
            logging.warning("Prometheus release not found, will install.")
            return False
        for line in status.splitlines():
            if line.strip().startswith("STATUS:"):
                return line.split(":", 1)[1].strip().lower() == "deployed"
        return False
