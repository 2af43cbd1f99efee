"""FAKE k8s_target_port-misconfig problems (SocialNetwork, namespace
test-social-network, faulty service user-service).

The fault is the real one, on the fake's tiny app: the Service's targetPort
is patched from 8080 (where the busybox httpd listens) to 9999; recovery
patches it back. With the fake kubectl of tests/fakes/bin these commands are
only recorded; with a real kubectl they run against the cluster."""

import shlex

from aiopslab.orchestrator.problems import evaluations
from aiopslab.orchestrator.problems.base import FakeProblemBase
from aiopslab.orchestrator.tasks import DetectionTask, MitigationTask
from aiopslab.service.apps.socialnet import SocialNetwork
from aiopslab.service.kubectl import KubeCtl

GOOD_PORT = 8080
BAD_PORT = 9999


class K8STargetPortMisconfigBaseTask(FakeProblemBase):
    def __init__(self, faulty_service="user-service"):
        self.app = SocialNetwork()
        self.kubectl = KubeCtl()
        self.namespace = self.app.namespace
        self.faulty_service = faulty_service

    def _patch_target_port(self, port):
        patch = f'[{{"op": "replace", "path": "/spec/ports/0/targetPort", "value": {port}}}]'
        self.kubectl.exec_command(
            f"kubectl patch service {self.faulty_service} -n {self.namespace} --type=json -p {shlex.quote(patch)}"
        )

    def _inject(self):
        self._patch_target_port(BAD_PORT)

    def _recover(self):
        self._patch_target_port(GOOD_PORT)


class K8STargetPortMisconfigDetection(K8STargetPortMisconfigBaseTask, DetectionTask):
    def __init__(self, faulty_service="user-service"):
        K8STargetPortMisconfigBaseTask.__init__(self, faulty_service=faulty_service)
        DetectionTask.__init__(self, self.app)

    def eval(self, soln, trace, duration):
        self.fake_eval_started()
        evaluations.detection(self, soln, "Yes")
        return super().eval(soln, trace, duration)


class K8STargetPortMisconfigMitigation(K8STargetPortMisconfigBaseTask, MitigationTask):
    def __init__(self, faulty_service="user-service"):
        K8STargetPortMisconfigBaseTask.__init__(self, faulty_service=faulty_service)
        MitigationTask.__init__(self, self.app)

    def eval(self, soln, trace, duration):
        self.fake_eval_started()
        super().eval(soln, trace, duration)
        # As the real one: the targetPort is back, and no pod is crashing or unready.
        self.results["success"] = self._target_port_restored() and self._pods_normal()
        return self.results

    def _target_port_restored(self):
        port = self.kubectl.exec_command(
            f"kubectl get svc {self.faulty_service} -n {self.namespace} -o jsonpath={{.spec.ports[0].targetPort}}"
        )
        return port.strip() == str(GOOD_PORT)

    def _pods_normal(self):
        # One line per container: "<ready> <waiting reason> <terminated reason>".
        template = (
            '{range .items[*]}{range .status.containerStatuses[*]}'
            '{.ready}{" "}{.state.waiting.reason}{" "}{.state.terminated.reason}{"\\n"}{end}{end}'
        )
        out = self.kubectl.exec_command(f"kubectl get pods -n {self.namespace} -o jsonpath={shlex.quote(template)}")
        for line in out.splitlines():
            fields = line.split(" ")
            ready, waiting, terminated = (fields + ["", "", ""])[:3]
            if waiting == "CrashLoopBackOff" or (terminated and terminated != "Completed") or ready != "true":
                return False
        return True
