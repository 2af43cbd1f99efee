"""FAKE aiopslab.service.apps.hotelres.HotelReservation: the real application
is DeathStarBench's hotel reservation applied from its Kubernetes manifests;
the fake applies one tiny manifest directory (aiopslab-fake-apps/hotelReservation:
a busybox `geo` Deployment and Service) the same way (`kubectl apply -Rf`),
deletes it the same way, and its cleanup deletes the namespace and looks for
leftover PersistentVolumes, as the real one. Constructing it creates the
namespace when missing, as the real one does."""

from aiopslab import _fake
from aiopslab.paths import HOTEL_RES_METADATA
from aiopslab.service.apps.base import Application
from aiopslab.service.kubectl import KubeCtl


class HotelReservation(Application):
    def __init__(self):
        super().__init__(HOTEL_RES_METADATA)
        self.kubectl = KubeCtl()
        self.load_app_json()
        self.frontend_service = "geo"
        self.frontend_port = 80
        self.create_namespace()

    def deploy(self):
        _fake.record("app_deploy", self.namespace)
        _fake.delay("deploy")
        self.kubectl.apply_configs(self.namespace, self.k8s_deploy_path)
        self.kubectl.wait_for_ready(self.namespace)

    def delete(self):
        _fake.record("app_delete", self.namespace)
        self.kubectl.delete_configs(self.namespace, self.k8s_deploy_path)

    def cleanup(self):
        super().cleanup()
        leftover = self.kubectl.exec_command(
            f"kubectl get pv --no-headers | grep '{self.namespace}' | awk '{{print $1}}'"
        ).splitlines()
        for pv in leftover:
            self.kubectl.exec_command(f"kubectl patch pv {pv} -p '{{\"metadata\":{{\"finalizers\":null}}}}'")
            self.kubectl.exec_command(f"kubectl delete pv {pv}")
