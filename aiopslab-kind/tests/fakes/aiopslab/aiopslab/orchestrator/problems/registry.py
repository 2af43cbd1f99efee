"""FAKE aiopslab.orchestrator.problems.registry.ProblemRegistry: seven problems
of the real catalog (same ids, applications, task types, answers)."""

from aiopslab.orchestrator.problems.k8s_target_port_misconfig.target_port import (
    K8STargetPortMisconfigDetection,
    K8STargetPortMisconfigMitigation,
)
from aiopslab.orchestrator.problems.misconfig_app.misconfig_app_hotel_res import (
    MisconfigAppHotelResAnalysis,
    MisconfigAppHotelResDetection,
    MisconfigAppHotelResLocalization,
    MisconfigAppHotelResMitigation,
)
from aiopslab.orchestrator.problems.no_op.no_op import NoOpDetection


class ProblemRegistry:
    def __init__(self):
        self.PROBLEM_REGISTRY = {
            "k8s_target_port-misconfig-detection-1": lambda: K8STargetPortMisconfigDetection(
                faulty_service="user-service"
            ),
            "k8s_target_port-misconfig-mitigation-1": lambda: K8STargetPortMisconfigMitigation(
                faulty_service="user-service"
            ),
            "misconfig_app_hotel_res-detection-1": MisconfigAppHotelResDetection,
            "misconfig_app_hotel_res-localization-1": MisconfigAppHotelResLocalization,
            "misconfig_app_hotel_res-analysis-1": MisconfigAppHotelResAnalysis,
            "misconfig_app_hotel_res-mitigation-1": MisconfigAppHotelResMitigation,
            "noop_detection_hotel_reservation-1": lambda: NoOpDetection(app_name="hotel"),
        }
        # Problems deployed with Docker instead of Kubernetes (the real ones are
        # the two Flower problems; the fake has none).
        self.DOCKER_REGISTRY = []

    def get_problem_instance(self, problem_id):
        if problem_id not in self.PROBLEM_REGISTRY:
            raise ValueError(f"Problem ID {problem_id} not found in registry.")
        problem = self.PROBLEM_REGISTRY[problem_id]()
        problem.problem_id = problem_id  # FAKE: names the problem in calls.log
        return problem

    def get_problem(self, problem_id):
        return self.PROBLEM_REGISTRY.get(problem_id)

    def get_problem_ids(self, task_type=None):
        return [pid for pid in self.PROBLEM_REGISTRY if not task_type or task_type in pid]

    def get_problem_count(self, task_type=None):
        return len(self.get_problem_ids(task_type))

    def get_problem_deployment(self, problem_id):
        return "docker" if problem_id in self.DOCKER_REGISTRY else "k8s"
