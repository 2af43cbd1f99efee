"""FAKE Session: records the trace and the solution, writes the session file
`<results_dir>/<uuid>_<start>.json` like the real one."""

import json
import time
import uuid


class Session:
    def __init__(self, results_dir=None):
        self.session_id = uuid.uuid4()
        self.results_dir = results_dir
        self.history = []
        self.solution = None
        self.results = {}
        self.agent_name = None
        self.problem = None
        self.pid = None
        self.start_time = None
        self.end_time = None

    def set_problem(self, problem, pid):
        self.problem = problem
        self.pid = pid

    def set_agent(self, agent_name):
        self.agent_name = agent_name

    def set_solution(self, solution):
        self.solution = solution

    def set_results(self, results):
        self.results = results

    def add(self, item):
        self.history.append(item)

    def start(self):
        self.start_time = time.time()

    def end(self):
        self.end_time = time.time()

    def get_duration(self):
        return (self.end_time or time.time()) - (self.start_time or time.time())

    def to_json(self):
        if self.results_dir is None:
            return
        self.results_dir.mkdir(parents=True, exist_ok=True)
        path = self.results_dir / f"{self.session_id}_{self.start_time}.json"
        with open(path, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "agent": self.agent_name,
                    "session_id": str(self.session_id),
                    "problem_id": self.pid,
                    "start_time": self.start_time,
                    "end_time": self.end_time,
                    "trace": self.history,
                    "results": self.results,
                },
                f,
                default=str,
            )
