"""FAKE aiopslab.session: the trace, the solution and the session file
`<results_dir>/<uuid>_<start>.json`, as the real one.

The real `SessionItem` is a pydantic model; this fake is a small look-alike
that does not need pydantic: attributes `role`/`content`, `model_dump()`,
`model_validate()`, and pydantic's coercion of `content: str` (a str stays,
an Enum becomes the str of its value - `SubmissionStatus.VALID_SUBMISSION`
is stored as "1" - anything else is a validation error)."""

import enum
import json
import time
import uuid

from aiopslab import _fake
from aiopslab.paths import RESULTS_DIR


class ValidationError(ValueError):
    """Raised where pydantic would raise its ValidationError."""


def _as_str(field, value):
    if isinstance(value, str):
        return value
    if isinstance(value, enum.Enum):
        return str(value.value)
    raise ValidationError(f"1 validation error for SessionItem\n{field}\n  Input should be a valid string "
                          f"[type=string_type, input_value={value!r}, input_type={type(value).__name__}]")


class SessionItem:
    __slots__ = ("role", "content")

    def __init__(self, role, content):
        self.role = _as_str("role", role)
        self.content = _as_str("content", content)

    @classmethod
    def model_validate(cls, data):
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            raise ValidationError(f"SessionItem expects a dict, got {type(data).__name__}")
        missing = [key for key in ("role", "content") if key not in data]
        if missing:
            raise ValidationError(f"SessionItem: field(s) {', '.join(missing)} required")
        return cls(data["role"], data["content"])

    def model_dump(self):
        return {"role": self.role, "content": self.content}

    def __eq__(self, other):
        return isinstance(other, SessionItem) and self.model_dump() == other.model_dump()

    def __repr__(self):
        return f"SessionItem(role={self.role!r}, content={self.content!r})"


class Session:
    def __init__(self, results_dir=None):
        self.session_id = uuid.uuid4()
        self.pid = None
        self.problem = None
        self.solution = None
        self.results = {}
        self.history = []
        self.start_time = None
        self.end_time = None
        self.agent_name = None
        self.results_dir = results_dir

    def set_problem(self, problem, pid=None):
        self.problem = problem
        self.pid = pid

    def set_solution(self, solution):
        self.solution = solution

    def set_results(self, results):
        self.results = results

    def set_agent(self, agent_name):
        self.agent_name = agent_name

    def add(self, item):
        if not item:
            return
        if isinstance(item, SessionItem):
            self.history.append(item)
        elif isinstance(item, dict):
            self.history.append(SessionItem.model_validate(item))
        elif isinstance(item, list):
            for sub_item in item:
                self.add(sub_item)
        else:
            raise TypeError(f"Unsupported type {type(item)}")

    def clear(self):
        self.history = []

    def start(self):
        # FAKE: the crash knob for the agent loop sits here because every
        # start_problem (AIOpsLab's own or a caller's) starts the session.
        _fake.crash_if("start_problem")
        self.start_time = time.time()

    def end(self):
        self.end_time = time.time()

    def get_duration(self):
        return self.end_time - self.start_time

    def to_dict(self):
        return {
            "agent": self.agent_name,
            "session_id": str(self.session_id),
            "problem_id": self.pid,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "trace": [item.model_dump() for item in self.history],
            "results": self.results,
        }

    def to_json(self):
        results_dir = self.results_dir if self.results_dir else RESULTS_DIR
        results_dir.mkdir(parents=True, exist_ok=True)
        with open(results_dir / f"{self.session_id}_{self.start_time}.json", "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=4)
