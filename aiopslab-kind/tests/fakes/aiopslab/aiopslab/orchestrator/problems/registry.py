"""FAKE problem registry: a few problems of the real catalog, each with the
answer its fake evaluation expects."""

import subprocess

from aiopslab.orchestrator.state import record


ACTIONS = {
    "exec_shell": "Execute any shell command in a predefined debugging environment.\n"
    "    Args:\n        command (str): The command to execute.\n    Returns:\n        str: The output.",
    "get_logs": "Collects relevant log data from a pod using Kubectl.\n    Args:\n        namespace (str)\n"
    "        service (str)",
    "get_metrics": "Collects metrics data from Prometheus.\n    Args:\n        namespace (str)\n"
    "        duration (int)",
    "read_metrics": "Reads and returns metrics from a specified CSV file.\n    Args:\n        file_path (str)",
    "get_traces": "Collects trace data from Jaeger.\n    Args:\n        namespace (str)\n        duration (int)",
    "read_traces": "Reads and returns traces from a specified CSV file.\n    Args:\n        file_path (str)",
    "submit": "Submit your solution (see the instructions for its form).",
}


class FakeProblem:
    def __init__(self, pid, task_type, namespace, expected, service="geo"):
        self.pid = pid
        self.task_type = task_type
        self.namespace = namespace
        self.expected = expected
        self.service = service
        self.workload = None
        self.results = {}

    # -- lifecycle, as AIOpsLab's problems have it
    def deploy(self):
        record("deploy", self.pid)
        subprocess.run(["kubectl", "create", "namespace", self.namespace], check=True, capture_output=True)
        subprocess.run(
            ["helm", "install", "prometheus", "prometheus", "-n", "observe", "--create-namespace"],
            check=True,
            capture_output=True,
        )
        # The wrk2 workload generator: a child process that keeps running.
        self.workload = subprocess.Popen(["sleep", "600"])
        record("workload", self.workload.pid)

    def inject_fault(self):
        record("inject_fault", self.pid)

    def recover_fault(self):
        record("recover_fault", self.pid)

    def task_desc(self):
        return (
            "You are an expert DevOps engineer assigned to "
            f"{'detect anomalies' if self.task_type == 'detection' else self.task_type} in a deployed service.\n\n"
            f"Service Name: Hotel Reservation\nNamespace: {self.namespace}\n"
            f"(FAKE problem {self.pid})"
        )

    def instructions(self):
        forms = {
            "detection": 'submit("Yes") or submit("No")',
            "localization": 'submit(["service-a", ...])',
            "analysis": 'submit({"system_level": "...", "fault_type": "..."})',
            "mitigation": "submit()",
        }
        return (
            "You will begin by analyzing the service's state and telemetry, and then submit your solution:\n"
            f"1. {forms[self.task_type]}\n"
            "Please respond with exactly one API call in a code block per turn."
        )

    # -- evaluation, with the real results keys per task type
    def eval(self, soln, trace, duration):
        results = {}
        if self.task_type == "detection":
            if isinstance(soln, str):
                correct = soln.strip().lower() == self.expected.lower()
                results["Detection Accuracy"] = "Correct" if correct else "Incorrect"
            else:
                results["Detection Accuracy"] = "Invalid Format"
            results["TTD"] = duration
        elif self.task_type == "localization":
            expected = set(self.expected)
            given = set(soln) if isinstance(soln, list) else set()
            results["Localization Accuracy"] = 100.0 * len(expected & given) / len(expected)
            results["success"] = given == expected
            results["is_subset"] = bool(given) and given <= expected
            results["TTL"] = duration
        elif self.task_type == "analysis":
            soln = soln if isinstance(soln, dict) else {}
            results["system_level_correct"] = soln.get("system_level") == self.expected["system_level"]
            results["fault_type_correct"] = soln.get("fault_type") == self.expected["fault_type"]
            results["success"] = results["system_level_correct"] and results["fault_type_correct"]
            results["TTA"] = duration
        else:
            results["success"] = True
            results["TTM"] = duration
        agent_text = [item["content"] for item in trace if item["role"] == "assistant"]
        env_text = [item["content"] for item in trace if item["role"] == "env"]
        results["steps"] = len(agent_text)
        results["in_tokens"] = sum(len(str(t)) // 4 for t in env_text)
        results["out_tokens"] = sum(len(str(t)) // 4 for t in agent_text)
        return results


class ProblemRegistry:
    def __init__(self):
        hotel = "test-hotel-reservation"
        self.problems = {
            "misconfig_app_hotel_res-detection-1": lambda: FakeProblem(
                "misconfig_app_hotel_res-detection-1", "detection", hotel, "Yes"
            ),
            "noop_detection_hotel_reservation-1": lambda: FakeProblem(
                "noop_detection_hotel_reservation-1", "detection", hotel, "No"
            ),
            "misconfig_app_hotel_res-localization-1": lambda: FakeProblem(
                "misconfig_app_hotel_res-localization-1", "localization", hotel, ["geo"]
            ),
            "misconfig_app_hotel_res-analysis-1": lambda: FakeProblem(
                "misconfig_app_hotel_res-analysis-1",
                "analysis",
                hotel,
                {"system_level": "Application", "fault_type": "Misconfiguration"},
            ),
            "misconfig_app_hotel_res-mitigation-1": lambda: FakeProblem(
                "misconfig_app_hotel_res-mitigation-1", "mitigation", hotel, None
            ),
        }

    def get_problem_instance(self, problem_id):
        if problem_id not in self.problems:
            raise ValueError(f"Problem ID {problem_id} not found in the fake registry")
        return self.problems[problem_id]()

