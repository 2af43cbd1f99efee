"""FAKE Orchestrator mirroring the real aiopslab.orchestrator.Orchestrator's
public interface and agent loop (see ../../README.md)."""

import atexit
import time
from pathlib import Path

from aiopslab.orchestrator.parser import ResponseParser
from aiopslab.orchestrator.problems.registry import ACTIONS, ProblemRegistry
from aiopslab.orchestrator.state import crash_if, record, record_env
from aiopslab.service.kubectl import KubeCtl
from aiopslab.session import Session
from aiopslab.utils.status import InvalidActionError, ResponseParsingError, SubmissionStatus


class Orchestrator:
    def __init__(self, results_dir=None):
        if results_dir is not None and not isinstance(results_dir, Path):
            raise TypeError("results_dir must be a pathlib.Path")
        self.agent = None
        self.agent_name = None
        self.session = None
        self.parser = ResponseParser()
        self.probs = ProblemRegistry()
        self.results_dir = results_dir
        self.kubectl = KubeCtl()  # the real constructor needs a loadable kubeconfig too
        self.execution_start_time = None
        self.execution_end_time = None

    def register_agent(self, agent, name="agent"):
        self.agent = agent
        self.agent_name = name

    def init_problem(self, problem_id):
        if self.agent is None:
            raise RuntimeError("register_agent must be called before init_problem")
        self.execution_start_time = time.time()
        record_env()
        record("init_problem", problem_id)
        self.session = Session(results_dir=self.results_dir)
        prob = self.probs.get_problem_instance(problem_id)
        self.session.set_problem(prob, pid=problem_id)
        self.session.set_agent(self.agent_name)
        prob.deploy()
        crash_if("init_problem")
        prob.inject_fault()
        atexit.register(self._atexit_recover, prob)
        return prob.task_desc(), prob.instructions(), dict(ACTIONS)

    @staticmethod
    def _atexit_recover(prob):
        record("recover_fault_atexit", prob.pid)

    async def ask_agent(self, input):
        assert self.session is not None
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
        try:
            env_response = self.perform_action(api, *args, **kwargs)
        except InvalidActionError as e:
            env_response = str(e)
        except Exception as e:  # the real one reports action errors as text too
            env_response = f"Error: {e}"
        self.session.add({"role": "env", "content": env_response})
        return env_response

    def perform_action(self, api, *args, **kwargs):
        if api == "submit":
            self.session.set_solution(args[0] if len(args) == 1 else list(args) if args else None)
            return SubmissionStatus.VALID_SUBMISSION
        if api == "exec_shell":
            if len(args) != 1 or not isinstance(args[0], str):
                raise InvalidActionError("exec_shell takes a single string")
            return f"(fake shell) $ {args[0]}\nNAME        READY   STATUS    RESTARTS\ngeo-1234    0/1     Error     3"
        if api in ACTIONS:
            return f"(fake {api}) no data"
        raise InvalidActionError(api)

    async def start_problem(self, max_steps):
        assert self.session is not None
        crash_if("start_problem")
        action_instr = "Please take the next action"
        action, env_response, results = "", "", {}
        self.session.start()
        try:
            for step in range(max_steps):
                action = await self.ask_agent(action_instr)
                env_response = await self.ask_env(action)
                if env_response == SubmissionStatus.VALID_SUBMISSION:
                    break
                elif env_response == SubmissionStatus.INVALID_SUBMISSION:
                    raise ValueError("Invalid submission!")
                action_instr = env_response + "\n" + "Please take the next action"
        except Exception as e:
            self.session.problem.recover_fault()
            raise e
        self.session.end()
        if env_response != SubmissionStatus.INVALID_SUBMISSION:
            results = self.session.problem.eval(
                self.session.solution, self.session.history, self.session.get_duration()
            )
        self.session.set_results(results)
        self.session.to_json()
        self.session.problem.recover_fault()
        self.execution_end_time = time.time()
        total = self.execution_end_time - self.execution_start_time
        return {
            "history": self.session.history,
            "final_state": env_response,
            "results": results,
            "framework_overhead": total - self.session.get_duration(),
        }
