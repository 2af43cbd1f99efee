"""FAKE misconfig_app_hotel_res problems (HotelReservation, faulty service
`geo`). The fault is only recorded; evaluations follow the real rules."""

from aiopslab.orchestrator.problems import evaluations
from aiopslab.orchestrator.problems.base import FakeProblemBase
from aiopslab.orchestrator.tasks import AnalysisTask, DetectionTask, LocalizationTask, MitigationTask
from aiopslab.service.apps.hotelres import HotelReservation
from aiopslab.service.kubectl import KubeCtl


class MisconfigAppHotelResBaseTask(FakeProblemBase):
    def __init__(self):
        self.app = HotelReservation()
        self.kubectl = KubeCtl()
        self.namespace = self.app.namespace
        self.faulty_service = "geo"


class MisconfigAppHotelResDetection(MisconfigAppHotelResBaseTask, DetectionTask):
    def __init__(self):
        MisconfigAppHotelResBaseTask.__init__(self)
        DetectionTask.__init__(self, self.app)

    def eval(self, soln, trace, duration):
        self.fake_eval_started()
        evaluations.detection(self, soln, "Yes")
        return super().eval(soln, trace, duration)


class MisconfigAppHotelResLocalization(MisconfigAppHotelResBaseTask, LocalizationTask):
    def __init__(self):
        MisconfigAppHotelResBaseTask.__init__(self)
        LocalizationTask.__init__(self, self.app)

    def eval(self, soln, trace, duration):
        self.fake_eval_started()
        verdict = evaluations.localization(self, soln, self.faulty_service)
        super().eval(soln, trace, duration)
        self.results.update(verdict)
        return self.results


class MisconfigAppHotelResAnalysis(MisconfigAppHotelResBaseTask, AnalysisTask):
    def __init__(self):
        MisconfigAppHotelResBaseTask.__init__(self)
        AnalysisTask.__init__(self, self.app)

    def eval(self, soln, trace, duration):
        self.fake_eval_started()
        self.results.update(evaluations.analysis(soln, "Application", "Misconfiguration"))
        super().eval(soln, trace, duration)
        return self.results


class MisconfigAppHotelResMitigation(MisconfigAppHotelResBaseTask, MitigationTask):
    def __init__(self):
        MisconfigAppHotelResBaseTask.__init__(self)
        MitigationTask.__init__(self, self.app)

    def eval(self, soln, trace, duration):
        self.fake_eval_started()
        super().eval(soln, trace, duration)
        # As the real one: success when every pod becomes ready within 60 s.
        try:
            self.kubectl.wait_for_ready(self.namespace, sleep=5, max_wait=60)
            self.results["success"] = True
        except Exception as e:  # noqa: BLE001 - a verdict, not an error
            print(f"Pods are not all ready: {e}")
            self.results["success"] = False
        return self.results
