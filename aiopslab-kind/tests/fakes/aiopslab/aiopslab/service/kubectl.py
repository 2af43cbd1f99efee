"""FAKE aiopslab.service.kubectl.KubeCtl.

Like the real one, the constructor loads a kubeconfig (context
`kind-$AIOPSLAB_CLUSTER` when that variable is set, `kind-kind` when
config.yml says `k8s_host: kind`, else the current context) and
`exec_command` runs its command with `shell=True`, returning stdout, or
stderr when the command fails. The real one talks to the API server with the
Python kubernetes client for the rest; this fake has no such client and runs
`kubectl` subprocesses instead (so with the fake `kubectl` of tests/fakes/bin
they are only recorded, and with a real `kubectl` they really run).

`wait_for_ready` and `wait_for_namespace_deletion` raise on timeout as the
real ones do; their `max_wait` is replaced by FAKE_AIOPSLAB_MAX_WAIT (default
2 s) instead of the real 300 s. FAKE_AIOPSLAB_TEARDOWN_FAIL=1 keeps the
`openebs` namespace, FAKE_AIOPSLAB_CLEANUP_FAIL=1 every other one, from
ever being deleted, so these waits raise."""

import json
import os
import shlex
import subprocess
import time

from aiopslab import _fake


class KubeCtl:
    def __init__(self):
        from aiopslab.paths import config as app_config

        cluster = os.environ.get("AIOPSLAB_CLUSTER")
        if cluster:
            context = f"kind-{cluster}"
        elif app_config.get("k8s_host", "kind") == "kind":
            context = "kind-kind"
        else:
            context = None  # the kubeconfig's current context
        self.kubeconfig = _fake.load_kube_config(context=context)
        self.context = context

    # -- shell commands, as the real one

    def exec_command(self, command, input_data=None):
        if input_data is not None:
            input_data = input_data.encode("utf-8")
        try:
            out = subprocess.run(command, shell=True, check=True, capture_output=True, input=input_data)
            return out.stdout.decode("utf-8")
        except subprocess.CalledProcessError as e:
            return e.stderr.decode("utf-8")

    def get_service_json(self, service_name, namespace, deserialize=True):
        result = self.exec_command(f"kubectl get service {service_name} -n {namespace} -o json")
        return json.loads(result) if deserialize else result

    def apply_configs(self, namespace, config_path):
        self.exec_command(f"kubectl apply -Rf {config_path} -n {namespace}")

    def delete_configs(self, namespace, config_path):
        if self.exec_command(f"kubectl get all -n {namespace} -o name"):
            self.exec_command(f"kubectl delete -Rf {config_path} -n {namespace} --timeout=10s")
        else:
            print(f"No resources found in: {namespace}. Skipping deletion.")

    # -- what the real one does through the Python client, here with kubectl

    def namespace_exists(self, namespace):
        """FAKE helper. Any failure to read the namespace counts as "gone", as
        in the real wait_for_namespace_deletion (which treats every exception
        of read_namespace so)."""
        out = subprocess.run(
            ["kubectl", "get", "namespace", namespace, "--ignore-not-found", "-o", "name"],
            capture_output=True,
            text=True,
        )
        return out.returncode == 0 and bool(out.stdout.strip())

    def create_namespace_if_not_exist(self, namespace):
        if self.namespace_exists(namespace):
            print(f"Namespace '{namespace}' already exists.")
            return
        self.exec_command(f"kubectl create namespace {namespace}")

    def delete_namespace(self, namespace):
        self.exec_command(f"kubectl delete namespace {namespace} --ignore-not-found --wait=false")
        self.wait_for_namespace_deletion(namespace)
        print(f"Namespace '{namespace}' deleted successfully.")

    def wait_for_ready(self, namespace, sleep=2, max_wait=300):
        """Waits until every pod of `namespace` is ready (pods that completed
        count as ready); an empty namespace keeps it waiting, as the real one.
        Raises after max_wait (replaced by FAKE_AIOPSLAB_MAX_WAIT)."""
        if namespace == "openebs":
            _fake.delay("openebs")
        max_wait = _fake.max_wait()
        poll = max(0.1, min(float(sleep), max_wait / 4))
        deadline = time.monotonic() + max_wait
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            command = (
                f"kubectl wait --for=condition=Ready pods --all -n {shlex.quote(namespace)} "
                f"--field-selector=status.phase!=Succeeded --timeout={max(1, int(min(poll, remaining)))}s"
            )
            if subprocess.run(command, shell=True, capture_output=True).returncode == 0:
                print(f"All pods in namespace '{namespace}' are ready.")
                return
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
        raise Exception(
            f"[red]Timeout: Not all pods in namespace '{namespace}' reached the Ready state within {max_wait} seconds."
        )

    def wait_for_namespace_deletion(self, namespace, sleep=2, max_wait=300):
        """Waits until `namespace` is gone; raises after max_wait (replaced by
        FAKE_AIOPSLAB_MAX_WAIT)."""
        max_wait = _fake.max_wait()
        poll = max(0.1, min(float(sleep), max_wait / 4))
        deadline = time.monotonic() + max_wait
        while time.monotonic() < deadline:
            # FAKE_AIOPSLAB_TEARDOWN_FAIL / _CLEANUP_FAIL: the namespace stays Terminating.
            if not _fake.namespace_stuck(namespace) and not self.namespace_exists(namespace):
                print(f"Namespace '{namespace}' has been deleted.")
                return
            time.sleep(poll)
        raise Exception(f"[red]Timeout: Namespace '{namespace}' was not deleted within {max_wait} seconds.")
