"""FAKE-only base of the fake problems (the real problems repeat this code in
each problem module): the workload, the fault hooks and the fake's records.

`problem_id` is set by the fake registry so calls.log can name the problem."""

from aiopslab import _fake
from aiopslab.generators.workload.wrk import Wrk


class FakeProblemBase:
    problem_id = None

    def start_workload(self):
        print("== Start Workload ==")
        Wrk(rate=10, dist="exp", connections=2, duration=10, threads=2).start_workload()
        # FAKE: the crash knob for init_problem sits here, after the workload
        # child started, because every init_problem (AIOpsLab's own or a
        # caller's) starts the workload last.
        _fake.crash_if("init_problem")

    def inject_fault(self):
        print("== Fault Injection ==")
        _fake.record("inject_fault", self.problem_id)
        _fake.delay("inject")
        self._inject()

    def recover_fault(self):
        print("== Fault Recovery ==")
        _fake.record("recover_fault", self.problem_id)
        self._recover()

    def _inject(self):
        """The fault itself (only recorded unless a problem overrides it)."""

    def _recover(self):
        """Undoes _inject."""

    def fake_eval_started(self):
        _fake.record("eval", self.problem_id)
        _fake.delay("eval")
