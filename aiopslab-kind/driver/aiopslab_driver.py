#!/usr/bin/env python3
"""aiopslab driver: runs ONE AIOpsLab problem for an aiopslab worker.

Shipped inside the `aiopslab-kind` crate and written to the run directory by
the worker, which starts it once per task:

    python aiopslab_driver.py --problem-id ID --max-steps N \
        --agent-config agent.json --results-dir results --events-fd 3

It drives AIOpsLab exactly as its public interface expects:

    orch = Orchestrator(results_dir=Path(...))
    orch.register_agent(agent, name=...)                  # before init_problem
    task_desc, instructions, actions = orch.init_problem(problem_id)
    out = asyncio.run(orch.start_problem(max_steps=N))    # calls agent.get_action

The agent talks to any OpenAI-compatible chat endpoint with urllib (no extra
dependencies). Its settings come from agent.json; the API key is read from
the environment variable it names (`api_key_env`), never from the file.

Events go out as one JSON object per line on their own channel (a file
descriptor, or a file), never on stdout, which AIOpsLab prints to:

    hello     protocol, python, aiopslab (where it was imported from)
    log       level, message, [step]
    problem   task_desc, instructions, actions, system_prompt, task_message, init_seconds
    llm_call  step, input, request, response, model, sampling, usage, latency_ms, logprobs, attempts
    step      step, action, api, env_response
    result    results, final_state, solution, framework_overhead, steps, session_file
    error     code, message, traceback

Exit codes: 0 result reported; 2 bad arguments or AIOpsLab not importable;
3 the LLM endpoint kept failing; 4 AIOpsLab raised; 143 stopped by SIGTERM.
"""

import argparse
import ast
import asyncio
import enum
import json
import math
import os
import pathlib
import signal
import sys
import time
import traceback
import urllib.error
import urllib.request

PROTOCOL_VERSION = 1
NEXT_ACTION = "Please take the next action"


# --------------------------------------------------------------------------- events


def to_jsonable(value, depth=0):
    """Makes AIOpsLab's values JSON-ready: enums by name, non-finite floats and
    unknown objects as strings, tuples and sets as lists."""
    if depth > 50:
        return str(value)
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, dict):
        return {str(k): to_jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v, depth + 1) for v in value]
    if isinstance(value, pathlib.PurePath):
        return str(value)
    return str(value)


class Events:
    """The event channel: one JSON object per line, flushed at once."""

    def __init__(self, fd=None, path=None):
        if fd is not None:
            self._stream = os.fdopen(fd, "w", encoding="utf-8", buffering=1)
        else:
            self._stream = open(path, "a", encoding="utf-8", buffering=1)

    def emit(self, kind, **fields):
        record = {"event": kind, "ts": time.time()}
        record.update(to_jsonable(fields))
        try:
            self._stream.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
            self._stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass  # the worker stopped listening; nothing more to report to

    def log(self, message, level="info", step=None):
        fields = {"level": level, "message": message}
        if step is not None:
            fields["step"] = step
        self.emit("log", **fields)


# --------------------------------------------------------------------------- replies


def extract_code_block(reply):
    """The text between the first and the last fence line, as AIOpsLab's parser reads it."""
    lines = (reply or "").split("\n")
    fences = [i for i, line in enumerate(lines) if "```" in line]
    if len(fences) < 2:
        return ""
    return "\n".join(lines[fences[0] + 1 : fences[-1]]).strip()


def api_name(reply):
    block = extract_code_block(reply)
    paren = block.find("(")
    return block[:paren].strip() if paren != -1 else ""


def parse_submission(reply):
    """The value a `submit(...)` reply submits (None for `submit()` or no submit)."""
    block = extract_code_block(reply)
    if not block.startswith("submit"):
        return None
    try:
        call = ast.parse(block, mode="eval").body
        if not isinstance(call, ast.Call):
            return None
        args = [ast.literal_eval(arg) for arg in call.args]
    except (SyntaxError, ValueError):
        return None
    if not args:
        return None
    return args[0] if len(args) == 1 else args


def build_system_prompt(task_desc, actions):
    """The agent's system message: the problem description, every action API
    with its documentation, and the reply format AIOpsLab parses."""
    docs = "\n\n".join(f"{name}:\n{doc}" for name, doc in (actions or {}).items())
    return (
        f"{task_desc}\n\n"
        "You interact with the environment by calling exactly one of these APIs per turn:\n\n"
        f"{docs}\n\n"
        "Reply format (the environment rejects anything else):\n"
        "- Think briefly if you like, then put exactly ONE API call inside ONE code block:\n"
        "  a line with three backticks, the call on its own line, a line with three backticks.\n"
        "- No language tag after the opening backticks, no indentation before the closing ones.\n"
        "- exec_shell takes a single quoted string, e.g.\n"
        "```\n"
        'exec_shell("kubectl get pods -A")\n'
        "```\n"
        "- Finish with submit(...) in the form the instructions ask for."
    )


def build_task_message(instructions):
    """The first user message: the problem's instructions."""
    return instructions


# --------------------------------------------------------------------------- the LLM endpoint


class EndpointError(RuntimeError):
    """The LLM endpoint kept failing; the run is an infrastructure failure."""


class ChatEndpoint:
    """An OpenAI-compatible /chat/completions endpoint, called with urllib."""

    def __init__(self, settings):
        self.base_url = settings["base_url"].rstrip("/")
        self.model = settings["model"]
        self.timeout = float(settings.get("request_timeout") or 120)
        self.retries = int(settings.get("retries") or 0)
        self.retry_delay = float(settings.get("retry_delay") or 0)
        self.sampling = {
            key: settings[key]
            for key in ("temperature", "top_p", "max_tokens")
            if settings.get(key) is not None
        }
        self.logprobs = bool(settings.get("logprobs"))
        self.top_logprobs = settings.get("top_logprobs")
        key_env = settings.get("api_key_env")
        self.api_key = os.environ.get(key_env) if key_env else None
        if key_env and not self.api_key:
            raise EndpointError(f"environment variable {key_env} (api_key_env) is not set")

    def body(self, messages):
        body = {"model": self.model, "messages": messages}
        body.update(self.sampling)
        if self.logprobs:
            body["logprobs"] = True
            if self.top_logprobs is not None:
                body["top_logprobs"] = self.top_logprobs
        return body

    def _post(self, body):
        data = json.dumps(body).encode("utf-8")
        request = urllib.request.Request(
            self.base_url + "/chat/completions",
            data=data,
            method="POST",
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        if self.api_key:
            request.add_header("Authorization", "Bearer " + self.api_key)
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return json.loads(response.read().decode("utf-8"))

    def complete(self, messages, events, step):
        """One chat completion, retried on endpoint errors. Returns
        (reply, usage, latency_ms, logprobs, model, attempts)."""
        body = self.body(messages)
        last_error = None
        for attempt in range(1, self.retries + 2):
            started = time.monotonic()
            try:
                payload = self._post(body)
                choice = payload["choices"][0]
                reply = choice["message"]["content"]
                if not isinstance(reply, str):
                    raise ValueError("the reply has no text content")
                latency_ms = (time.monotonic() - started) * 1000.0
                return (
                    reply,
                    payload.get("usage"),
                    latency_ms,
                    choice.get("logprobs"),
                    payload.get("model") or self.model,
                    attempt,
                )
            except urllib.error.HTTPError as err:
                detail = ""
                try:
                    detail = err.read().decode("utf-8", "replace")[:500]
                except Exception:  # noqa: BLE001 - best effort detail
                    pass
                last_error = f"HTTP {err.code} from {self.base_url}: {detail}".strip()
            except (urllib.error.URLError, OSError, TimeoutError) as err:
                last_error = f"cannot reach {self.base_url}: {err}"
            except (ValueError, KeyError, IndexError, TypeError) as err:
                last_error = f"unexpected answer from {self.base_url}: {err!r}"
            if attempt <= self.retries:
                delay = self.retry_delay * (2 ** (attempt - 1))
                events.log(
                    f"LLM call failed (attempt {attempt} of {self.retries + 1}): {last_error}; retrying in {delay:.1f} s",
                    level="warning",
                    step=step,
                )
                time.sleep(delay)
        attempts = self.retries + 1
        raise EndpointError(
            f"the LLM endpoint failed {attempts} attempt{'s' if attempts != 1 else ''} in a row; "
            f"last error: {last_error}"
        )


# --------------------------------------------------------------------------- the agent


class LlmAgent:
    """The agent AIOpsLab drives: `await get_action(text) -> str`."""

    def __init__(self, endpoint, events):
        self.endpoint = endpoint
        self.events = events
        self.messages = []
        self.step = 0
        self.last_action = None

    def init_context(self, task_desc, instructions, actions):
        self.system_prompt = build_system_prompt(task_desc, actions)
        self.task_message = build_task_message(instructions)
        self.messages = [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": self.task_message},
        ]

    def _report_step(self, env_response):
        """The previous action's environment response is known: report the step."""
        if self.last_action is None:
            return
        self.events.emit(
            "step",
            step=self.step,
            action=self.last_action,
            api=api_name(self.last_action),
            env_response=env_response,
        )

    async def get_action(self, input: str) -> str:
        env_response = input
        if env_response.endswith(NEXT_ACTION):
            env_response = env_response[: -len(NEXT_ACTION)].rstrip("\n")
        self._report_step(env_response)
        self.step += 1
        self.messages.append({"role": "user", "content": input})
        request = list(self.messages)
        reply, usage, latency_ms, logprobs, model, attempts = self.endpoint.complete(
            request, self.events, self.step
        )
        self.messages.append({"role": "assistant", "content": reply})
        self.last_action = reply
        self.events.emit(
            "llm_call",
            step=self.step,
            input=input,
            request=request,
            response=reply,
            model=model,
            sampling=self.endpoint.sampling,
            usage=usage,
            latency_ms=latency_ms,
            logprobs=logprobs,
            attempts=attempts,
        )
        return reply

    def finish(self, out):
        """After start_problem: report the last step with the final env response."""
        if self.last_action is None:
            return
        final = None
        history = out.get("history") if isinstance(out, dict) else None
        if isinstance(history, list):
            for item in reversed(history):
                if isinstance(item, dict) and item.get("role") == "env":
                    final = item.get("content")
                    break
        if final is None and isinstance(out, dict):
            final = out.get("final_state")
        self._report_step(to_jsonable(final) if not isinstance(final, str) else final)
        self.last_action = None


# --------------------------------------------------------------------------- main


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Run one AIOpsLab problem for an aiopslab worker.")
    parser.add_argument("--problem-id", required=True)
    parser.add_argument("--max-steps", type=int, required=True)
    parser.add_argument("--agent-config", required=True, help="agent.json written by the worker")
    parser.add_argument("--results-dir", required=True)
    channel = parser.add_mutually_exclusive_group(required=True)
    channel.add_argument("--events-fd", type=int)
    channel.add_argument("--events-file")
    return parser.parse_args(argv)


def submitted_solution(orch, agent):
    session = getattr(orch, "session", None)
    if session is not None and hasattr(session, "solution"):
        return getattr(session, "solution")
    return parse_submission(agent.last_action)


def newest_session_file(results_dir, before):
    try:
        files = [p for p in pathlib.Path(results_dir).glob("*.json") if p.stat().st_mtime >= before]
    except OSError:
        return None
    return str(max(files, key=lambda p: p.stat().st_mtime)) if files else None


def on_sigterm(signum, frame):
    # SystemExit unwinds through AIOpsLab (which recovers the fault) and runs atexit hooks.
    raise SystemExit(143)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    events = Events(fd=args.events_fd, path=args.events_file)
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with open(args.agent_config, encoding="utf-8") as f:
            settings = json.load(f)
    except (OSError, ValueError) as err:
        events.emit("error", code="driver_usage", message=f"cannot read {args.agent_config}: {err}")
        return 2

    try:
        import aiopslab  # noqa: F401
        from aiopslab.orchestrator import Orchestrator
    except Exception as err:  # noqa: BLE001 - report whatever broke the import
        events.emit(
            "error",
            code="aiopslab_import",
            message=f"cannot import aiopslab ({type(err).__name__}: {err}); install an AIOpsLab checkout "
            "with `pip install -e .` or point the worker at it with --aiopslab-dir",
            traceback=traceback.format_exc(),
        )
        return 2

    events.emit(
        "hello",
        protocol=PROTOCOL_VERSION,
        python=sys.version.split()[0],
        aiopslab=os.path.dirname(getattr(aiopslab, "__file__", "") or ""),
    )
    started = time.time()
    agent = None
    try:
        endpoint = ChatEndpoint(settings)
        agent = LlmAgent(endpoint, events)
        orch = Orchestrator(results_dir=pathlib.Path(args.results_dir))
        orch.register_agent(agent, name=settings.get("agent_name") or "aiopslab-worker-agent")
        events.log(f"init_problem({args.problem_id!r}): deploying the application and injecting the fault")
        init_started = time.monotonic()
        task_desc, instructions, actions = orch.init_problem(args.problem_id)
        init_seconds = time.monotonic() - init_started
        actions = dict(actions or {})
        agent.init_context(task_desc, instructions, actions)
        events.emit(
            "problem",
            task_desc=task_desc,
            instructions=instructions,
            actions=actions,
            system_prompt=agent.system_prompt,
            task_message=agent.task_message,
            init_seconds=init_seconds,
        )
        events.log(f"start_problem(max_steps={args.max_steps}): the agent loop begins")
        out = asyncio.run(orch.start_problem(max_steps=args.max_steps))
        agent.finish(out)
        out = out if isinstance(out, dict) else {}
        events.emit(
            "result",
            results=out.get("results") or {},
            final_state=None if out.get("final_state") is None else str(to_jsonable(out.get("final_state"))),
            solution=submitted_solution(orch, agent),
            framework_overhead=out.get("framework_overhead"),
            steps=agent.step,
            session_file=newest_session_file(args.results_dir, started),
        )
        return 0
    except EndpointError as err:
        events.emit("error", code="llm_endpoint_error", message=str(err))
        return 3
    except SystemExit as err:
        if err.code == 143:
            events.log("stopped by SIGTERM", level="warning")
        raise
    except BaseException as err:  # noqa: BLE001 - every failure must reach the worker
        events.emit(
            "error",
            code="aiopslab_error",
            message=f"{type(err).__name__}: {err}",
            traceback=traceback.format_exc(),
        )
        return 4


if __name__ == "__main__":
    sys.exit(main())
