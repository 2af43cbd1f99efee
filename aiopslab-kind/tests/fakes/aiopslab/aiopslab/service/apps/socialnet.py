"""FAKE aiopslab.service.apps.socialnet.SocialNetwork: the real application is
DeathStarBench's social network installed with Helm; the fake is one real
manifest (aiopslab-fake-apps/socialNetwork/user-service.yaml: a busybox httpd
Deployment `user-service` and a Service `user-service` port 80 -> 8080)
applied with kubectl in `test-social-network`. Constructing it creates the
namespace when missing, as the real one does."""

from aiopslab import _fake
from aiopslab.paths import SOCIAL_NETWORK_METADATA
from aiopslab.service.apps.base import Application
from aiopslab.service.kubectl import KubeCtl


class SocialNetwork(Application):
    def __init__(self):
        super().__init__(SOCIAL_NETWORK_METADATA)
        self.load_app_json()
        self.kubectl = KubeCtl()
        self.manifest = self.k8s_deploy_path / "user-service.yaml"
        self.frontend_service = "user-service"
        self.frontend_port = 80
        self.create_namespace()

    def deploy(self):
        _fake.record("app_deploy", self.namespace)
        _fake.delay("deploy")
        self.kubectl.exec_command(f"kubectl apply -n {self.namespace} -f {self.manifest}")
        self.kubectl.wait_for_ready(self.namespace)

    def delete(self):
        _fake.record("app_delete", self.namespace)
        self.kubectl.exec_command(f"kubectl delete -n {self.namespace} -f {self.manifest} --ignore-not-found")
