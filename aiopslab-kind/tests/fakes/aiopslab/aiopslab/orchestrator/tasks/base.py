"""FAKE aiopslab.orchestrator.tasks.base.Task: results bookkeeping, the common
evaluation (steps, in_tokens, out_tokens; the qualitative judge is not faked)
and the action dispatch shared by every task type."""

import textwrap

from aiopslab.config import Config
from aiopslab.orchestrator.evaluators.quantitative import in_tokens, num_steps_taken, out_tokens
from aiopslab.paths import BASE_DIR
from aiopslab.service.kubectl import KubeCtl
from aiopslab.utils.actions import get_actions
from aiopslab.utils.status import InvalidActionError

config = Config(BASE_DIR / "config.yml")

ANSWER_FORMAT = """\
You will respond with one of the above APIs as your next action.
Please respond in the following format in a markdown code block:
```\n<API_NAME>(<API_PARAM1>, <API_PARAM2> ...)\n```

For instance, to list the files of the current directory, your response must be exactly:

```\nexec_shell("ls -l")\n```
"""


class Task:
    task_name = None  # the module of aiopslab.orchestrator.actions holding the task's actions
    task_desc = ""
    instructions = ""

    def __init__(self, app=None):
        self.results = {}
        self.kubectl = KubeCtl()
        if app is not None:
            self.app = app
            self.helm_configs = app.helm_configs
            self.app_summary = app.get_app_summary()

    def get_task_description(self):
        return textwrap.dedent(self.task_desc).format(app_summary=self.app_summary)

    def get_instructions(self):
        return ANSWER_FORMAT + "\n" + textwrap.dedent(self.instructions)

    def get_available_actions(self):
        return get_actions(task=self.task_name)

    def perform_action(self, action_name, *args, **kwargs):
        method = getattr(self.actions, action_name, None)
        if method is not None and callable(method):
            return method(*args, **kwargs)
        raise InvalidActionError(action_name)

    def add_result(self, key, value):
        self.results[key] = value

    def common_eval(self, trace):
        self.add_result("steps", num_steps_taken(trace))
        self.add_result("in_tokens", in_tokens(trace))
        self.add_result("out_tokens", out_tokens(trace))
        if config.get("qualitative_eval"):
            raise NotImplementedError("FAKE aiopslab: qualitative_eval (the LLM judge) is not faked")
