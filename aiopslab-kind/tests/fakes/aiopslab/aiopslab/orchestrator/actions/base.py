"""FAKE aiopslab.orchestrator.actions.base.TaskActions: the actions every task
offers. `exec_shell` is real, as in the real package: the block list first,
then `Shell.exec` (a `sh -c` child of this process with its environment when
k8s_host is localhost). get_logs/get_metrics/read_metrics/get_traces/
read_traces answer canned data through the same dispatch path.

Importing this module imports aiopslab.observer, which loads ~/.kube/config
(as the real one does, through its metric API import)."""

import os
from datetime import datetime, timedelta

from aiopslab.observer.metric_api import PrometheusAPI
from aiopslab.observer.trace_api import TraceAPI
from aiopslab.service.shell import Shell
from aiopslab.utils.actions import action, read

# Commands the real exec_shell refuses, with its answers.
BLOCK_LIST = {
    "kubectl edit": "Error: Cannot use `kubectl edit`. Use `kubectl patch` instead.",
    "edit svc": "Error: Cannot use `kubectl edit`. Use `kubectl patch` instead.",
    "kubectl port-forward": "Error: Cannot use `kubectl port-forward` because it is an interactive command.",
    "docker logs -f": "Error: Cannot use `docker logs -f`. Use `docker logs` instead.",
    "kubectl logs -f": "Error: Cannot use `kubectl logs -f`. Use `kubectl logs` instead.",
}

KNOWN_NAMESPACES = ("test-social-network", "test-hotel-reservation", "astronomy-shop")


class TaskActions:
    @staticmethod
    @read
    def get_logs(namespace: str, service: str) -> str:
        """
        Collects the logs of a service's pod (FAKE: canned lines).

        Args:
            namespace (str): The namespace in which the service is running.
            service (str): The name of the service.

        Returns:
            str: The service's log lines.
        """
        if namespace not in KNOWN_NAMESPACES:
            return "Error: Your service/namespace does not exist. Use kubectl to check."
        return f"[fake] {service}: started\n[fake] {service}: handling requests\n"

    @staticmethod
    @action
    def exec_shell(command: str, timeout: int = 30) -> str:
        """
        Execute any shell command in a predefined debugging environment.
        Note: this is NOT A STATEFUL OR INTERACTIVE shell session. So you cannot
        execute commands like "kubectl edit".

        Args:
            command (str): The command to execute.
            timeout (int): Timeout in seconds for the command execution. Default is 30.

        Returns:
            str: The output of the command.
        """
        for pattern, refusal in BLOCK_LIST.items():
            if pattern in command:
                return refusal
        result = Shell.exec(command, timeout=timeout)
        print(result)
        return result

    @staticmethod
    @read
    def get_metrics(namespace: str, duration: int = 5) -> str:
        """
        Collects metrics data from the service using Prometheus (FAKE: canned CSV).

        Args:
            namespace (str): The namespace in which the service is running.
            duration (int): The number of minutes from now to start collecting metrics until now.

        Returns:
            str: Path to the directory where metrics are saved.
        """
        api = PrometheusAPI("http://localhost:32000", namespace)
        api.initialize_pod_and_service_lists(namespace)
        end_time = datetime.now()
        start_time = end_time - timedelta(minutes=duration)
        return api.export_all_metrics(
            start_time=start_time, end_time=end_time, save_path=os.path.join(os.getcwd(), "metrics_output")
        )

    @staticmethod
    @read
    def read_metrics(file_path: str) -> str:
        """
        Reads and returns metrics from a specified CSV file.

        Args:
            file_path (str): Path to the metrics file (CSV format).

        Returns:
            str: The requested metrics or an error message.
        """
        return _read_csv(file_path, "Metrics", "metrics")

    @staticmethod
    @read
    def get_traces(namespace: str, duration: int = 5) -> str:
        """
        Collects trace data from the service using Jaeger (FAKE: canned CSV).

        Args:
            namespace (str): The namespace in which the service is running.
            duration (int): The number of minutes from now to start collecting traces until now.

        Returns:
            str: Path to the directory where traces are saved.
        """
        api = TraceAPI(namespace=namespace)
        end_time = datetime.now()
        traces = api.extract_traces(start_time=end_time - timedelta(minutes=duration), end_time=end_time)
        return api.save_traces(api.process_traces(traces), os.path.join(os.getcwd(), "trace_output"))

    @staticmethod
    @read
    def read_traces(file_path: str) -> str:
        """
        Reads and returns traces from a specified CSV file.

        Args:
            file_path (str): Path to the traces file (CSV format).

        Returns:
            str: The requested traces or an error message.
        """
        return _read_csv(file_path, "Traces", "traces")


def _read_csv(file_path, title, what):
    if not os.path.exists(file_path):
        return f"error: {title} file '{file_path}' not found."
    try:
        with open(file_path, encoding="utf-8") as f:
            return f.read()
    except Exception as e:  # noqa: BLE001 - reported to the agent, as the real one
        return f"Failed to read {what}: {e}"
