"""FAKE noop_detection_hotel_reservation problem: no fault; the right answer is "No"."""

from aiopslab.orchestrator.problems import evaluations
from aiopslab.orchestrator.problems.base import FakeProblemBase
from aiopslab.orchestrator.tasks import DetectionTask
from aiopslab.service.apps.hotelres import HotelReservation
from aiopslab.service.kubectl import KubeCtl


class NoOpDetection(FakeProblemBase, DetectionTask):
    def __init__(self, app_name="hotel"):
        if app_name != "hotel":
            raise ValueError(f"FAKE aiopslab: unsupported app_name {app_name}")
        self.app = HotelReservation()
        self.kubectl = KubeCtl()
        self.namespace = self.app.namespace
        self.faulty_service = "PLACEHOLDER"
        DetectionTask.__init__(self, self.app)

    def eval(self, soln, trace, duration):
        self.fake_eval_started()
        evaluations.detection(self, soln, "No")
        return super().eval(soln, trace, duration)
