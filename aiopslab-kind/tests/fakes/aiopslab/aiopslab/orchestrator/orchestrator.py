"""FAKE aiopslab.orchestrator.orchestrator: the real Orchestrator's sequence,
step for step (own code), on the fake's services.

init_problem: session and problem; unless the problem is Docker-deployed,
OpenEBS (`kubectl apply -f <internet URL>`, default storage class, wait for
the `openebs` pods - raises after its max wait) and Prometheus (helm); then
app.delete(), app.deploy(), the fault inside a CriticalSection with the
atexit hook `exit_cleanup_fault`, and the workload.

start_problem: the agent loop (ends at the first valid submission or after
max_steps; recovers the fault and re-raises when it raises), eval, session
file, fault recovery, app.cleanup(), Prometheus teardown, OpenEBS removal
(waits for the `openebs` namespace to be gone - raises after its max wait),
and framework_overhead from the TT* results key (raises when there is none,
as the real one). Anything raising after eval loses the return value, as in
the real one."""

import asyncio
import atexit
import inspect
import os
import time

from aiopslab import _fake
from aiopslab.orchestrator.parser import ResponseParser
from aiopslab.orchestrator.problems.registry import ProblemRegistry
from aiopslab.service.kubectl import KubeCtl
from aiopslab.service.telemetry.prometheus import Prometheus
from aiopslab.session import Session
from aiopslab.utils.critical_section import CriticalSection
from aiopslab.utils.status import InvalidActionError, ResponseParsingError, SessionPrint, SubmissionStatus

OPENEBS_URL = "https://openebs.github.io/charts/openebs-operator.yaml"
DEFAULT_STORAGE_CLASS_PATCH = (
    "kubectl patch storageclass openebs-hostpath -p "
    "'{\"metadata\": {\"annotations\":{\"storageclass.kubernetes.io/is-default-class\":\"true\"}}}'"
)


class Orchestrator:
    def __init__(self, results_dir=None):
        self.agent = None
        self.session = None
        self.parser = ResponseParser()
        self.probs = ProblemRegistry()
        self.sprint = SessionPrint()
        self.execution_start_time = None
        self.execution_end_time = None
        self.kubectl = KubeCtl()
        self.use_wandb = os.getenv("USE_WANDB", "false").lower() == "true"
        self.results_dir = results_dir
        _fake.record_env()

    def init_problem(self, problem_id):
        _fake.record("init_problem", problem_id)
        self.execution_start_time = time.time()
        self.session = Session(results_dir=self.results_dir)
        print(f"Session ID: {self.session.session_id}")
        prob = self.probs.get_problem_instance(problem_id)
        deployment = self.probs.get_problem_deployment(problem_id)
        self.session.set_problem(prob, pid=problem_id)
        self.session.set_agent(self.agent_name)

        if deployment != "docker":
            _fake.record("openebs_install")
            self.kubectl.exec_command(f"kubectl apply -f {OPENEBS_URL}")
            self.kubectl.exec_command(DEFAULT_STORAGE_CLASS_PATCH)
            self.kubectl.wait_for_ready("openebs")
            self.prometheus = Prometheus()
            self.prometheus.deploy()

        prob.app.delete()
        prob.app.deploy()

        with CriticalSection():
            prob.inject_fault()
            atexit.register(exit_cleanup_fault, prob=prob)

        if inspect.iscoroutinefunction(prob.start_workload):
            asyncio.create_task(prob.start_workload())
        else:
            prob.start_workload()

        return prob.get_task_description(), prob.get_instructions(), prob.get_available_actions()

    def register_agent(self, agent, name="agent"):
        self.agent = agent
        self.agent_name = name

    async def ask_agent(self, input):
        assert self.session is not None
        assert self.agent is not None
        agent_response = await self.agent.get_action(input)
        self.session.add({"role": "assistant", "content": agent_response})
        return agent_response

    async def ask_env(self, input):
        assert self.session is not None
        try:
            resp = self.parser.parse(input)
        except ResponseParsingError as e:
            self.session.add({"role": "env", "content": str(e)})
            return str(e)

        api, args, kwargs = resp["api_name"], resp["args"], resp["kwargs"]
        if api == "submit":
            # Recorded before the action runs: submit() -> [], one argument -> it, else the list.
            self.session.set_solution(args[0] if len(args) == 1 else args)

        try:
            env_response = self.session.problem.perform_action(api, *args, **kwargs)
            if hasattr(env_response, "error"):
                env_response = str(env_response)
        except InvalidActionError as e:
            env_response = str(e)
        except Exception as e:  # noqa: BLE001 - the agent reads the error, as in the real one
            env_response = str(e)

        self.session.add({"role": "env", "content": env_response})
        return env_response

    async def start_problem(self, max_steps):
        assert self.session is not None
        _fake.record("start_problem", self.session.pid)
        action_instr = "Please take the next action"
        action, env_response, results = "", "", {}
        self.session.start()

        try:
            for step in range(max_steps):
                action = await self.ask_agent(action_instr)
                self.sprint.agent(action)
                env_response = await self.ask_env(action)
                self.sprint.service(env_response)
                if env_response == SubmissionStatus.VALID_SUBMISSION:
                    break
                elif env_response == SubmissionStatus.INVALID_SUBMISSION:
                    raise ValueError("Invalid submission!")
                action_instr = env_response + "\n" + "Please take the next action"
        except Exception as e:
            with CriticalSection():
                self.session.problem.recover_fault()
                atexit.unregister(exit_cleanup_fault)
            raise e

        self.session.end()
        if env_response != SubmissionStatus.INVALID_SUBMISSION:
            results = self.session.problem.eval(
                self.session.solution, self.session.history, self.session.get_duration()
            )
            self.sprint.result(results)

        self.session.set_results(results)
        self.session.to_json()

        with CriticalSection():
            self.session.problem.recover_fault()
            atexit.unregister(exit_cleanup_fault)

        self.session.problem.app.cleanup()

        if self.session.problem.namespace != "docker":
            _fake.delay("teardown")
            self.prometheus.teardown()
            _fake.record("openebs_uninstall")
            self.kubectl.exec_command("kubectl delete sc openebs-hostpath openebs-device --ignore-not-found")
            self.kubectl.exec_command(f"kubectl delete -f {OPENEBS_URL}")
            self.kubectl.wait_for_namespace_deletion("openebs")

        self.execution_end_time = time.time()
        total_execution_time = self.execution_end_time - self.execution_start_time
        time_key = next((k for k in ("TTD", "TTL", "TTA", "TTM") if k in results), None)
        framework_overhead = total_execution_time - results[time_key]  # KeyError without one, as the real one

        return {
            "history": self.session.history,
            "final_state": env_response,
            "results": results,
            "framework_overhead": framework_overhead,
        }


def exit_cleanup_fault(prob):
    """The atexit hook init_problem registers: recovers the fault when the
    process exits before start_problem did."""
    print("Recovering fault before exit...")
    _fake.record("recover_fault_atexit", getattr(prob, "problem_id", None))
    prob.recover_fault()
