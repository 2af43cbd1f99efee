#!/usr/bin/env python3
"""aiopslab driver: runs ONE AIOpsLab problem (or installs the shared
infrastructure of a cluster) for an aiopslab worker.

Shipped inside the `aiopslab-kind` crate and written to the run directory by
the worker, which starts it once per task (run mode) or once per cluster
(infra mode):

    python aiopslab_driver.py --problem-id ID --max-steps N \
        --agent-config agent.json --results-dir results \
        (--events-fd 3 | --events-file F) [--stock-orchestrator]

    python aiopslab_driver.py --install-infra --openebs-manifest URL_OR_PATH \
        (--events-fd 3 | --events-file F)

Run mode drives AIOpsLab through its public interface:

    orch = Orchestrator(results_dir=Path(...))
    orch.register_agent(agent, name=...)                  # before init_problem
    task_desc, instructions, actions = orch.init_problem(problem_id)
    out = asyncio.run(orch.start_problem(max_steps=N))    # calls agent.get_action

By default `orch` is the WARM orchestrator: a subclass of AIOpsLab's own that
runs the same problem objects and the same agent loop but neither installs
nor removes the cluster's shared infrastructure (OpenEBS, Prometheus), which
AIOpsLab's own init_problem/start_problem do on every task and which infra
mode installs once. `--stock-orchestrator` runs AIOpsLab's own
init_problem/start_problem unchanged.

The agent talks to an OpenAI-compatible chat endpoint with urllib (no extra
dependencies): `<base_url>/chat/completions`, where base_url is the worker's
loopback LLM proxy. The driver never sees the real endpoint nor any API key,
and never sends an Authorization header; the proxy records requests, usage
and logprobs. agent.json keys: base_url, model, temperature, top_p,
max_tokens, logprobs, top_logprobs, request_timeout, retries, retry_delay,
agent_name, max_context_tokens.

Events (protocol 2) go out as one JSON object per line, each with "event"
and "ts", on their own channel (a file descriptor or a file), never on
stdout, which AIOpsLab prints to:

    hello            protocol, python, aiopslab (package dir or null),
                     orchestrator ("warm" | "stock" | "infra")
    log              level, message, [step]
    problem          task_desc, instructions, actions, system_prompt,
                     task_message, setup_seconds
    llm_call         step, input, response, attempts, latency_ms
    context_trimmed  step, dropped_messages, tokens_before, tokens_after, budget
    step             step, action, api (AIOpsLab's parser; null if unparsable),
                     env_response
    result           results, final_state, solution, framework_overhead, steps,
                     phases {setup_seconds, agent_seconds, eval_seconds}
                     -- sent as soon as the evaluation exists, before the
                     session file, fault recovery, app cleanup, teardown
    cleanup          cleanup_seconds, session_file
    cleanup_error    stage, message, traceback, cleanup_seconds, session_file
    infra            component ("openebs" | "prometheus"),
                     state ("installed" | "already_present"), seconds
    infra_done       seconds
    error            code, message, traceback

Error codes: driver_usage, aiopslab_import, llm_endpoint_error,
aiopslab_error, infra_error.

Exit codes: 0 result reported (even if cleanup failed afterwards) or infra
done; 2 bad arguments or AIOpsLab not importable; 3 the LLM endpoint kept
failing; 4 AIOpsLab raised before a result; 5 infra install failed;
143 stopped by SIGTERM.
"""

import argparse
import asyncio
import atexit
import enum
import hashlib
import importlib.util
import inspect
import json
import math
import os
import pathlib
import shlex
import signal
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

PROTOCOL_VERSION = 2
NEXT_ACTION = "Please take the next action"
DEFAULT_MAX_CONTEXT_TOKENS = 120000  # AIOpsLab's reference client trims at 120k
DEFAULT_AGENT_NAME = "aiopslab-worker-agent"

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_LLM = 3
EXIT_AIOPSLAB = 4
EXIT_INFRA = 5
EXIT_SIGTERM = 143

# tiktoken's cl100k_base data file, and where tiktoken caches it.
CL100K_BLOB = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"

OPENEBS_NAMESPACE = "openebs"
DEFAULT_STORAGE_CLASS_PATCH = (
    "kubectl patch storageclass openebs-hostpath -p "
    "'{\"metadata\": {\"annotations\":{\"storageclass.kubernetes.io/is-default-class\":\"true\"}}}'"
)
POD_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")


# --------------------------------------------------------------------------- events


def to_jsonable(value, depth=0):
    """Makes AIOpsLab's values JSON-ready: enums by name, pydantic-like models
    by model_dump(), non-finite floats and unknown objects as strings, tuples
    and sets as lists."""
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
    if callable(getattr(value, "model_dump", None)):
        try:
            return to_jsonable(value.model_dump(), depth + 1)
        except Exception:  # noqa: BLE001 - fall back to its text
            pass
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

    def error(self, code, message, with_traceback=True):
        self.emit("error", code=code, message=message, traceback=traceback.format_exc() if with_traceback else None)


# --------------------------------------------------------------------------- arguments


class UsageError(Exception):
    """Bad command line: reported as a driver_usage error."""


class _ArgumentParser(argparse.ArgumentParser):
    # argparse would print and exit; the worker wants the reason as an event.
    def error(self, message):
        raise UsageError(message)


def _argument_parser():
    parser = _ArgumentParser(description="Run one AIOpsLab problem (or install a cluster's shared infrastructure).")
    parser.add_argument("--problem-id")
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--agent-config", help="agent.json written by the worker")
    parser.add_argument("--results-dir")
    parser.add_argument("--stock-orchestrator", action="store_true",
                        help="run AIOpsLab's own init_problem/start_problem unchanged")
    parser.add_argument("--install-infra", action="store_true", help="install OpenEBS and Prometheus, then exit")
    parser.add_argument("--openebs-manifest", help="URL or path of the OpenEBS operator manifest (infra mode)")
    channel = parser.add_mutually_exclusive_group(required=True)
    channel.add_argument("--events-fd", type=int)
    channel.add_argument("--events-file")
    return parser


def parse_args(argv):
    """The parsed command line; UsageError when it is not one of the two modes."""
    args = _argument_parser().parse_args(argv)
    run_args = {
        "--problem-id": args.problem_id,
        "--max-steps": args.max_steps,
        "--agent-config": args.agent_config,
        "--results-dir": args.results_dir,
    }
    if args.install_infra:
        extra = [name for name, value in run_args.items() if value is not None]
        if args.stock_orchestrator:
            extra.append("--stock-orchestrator")
        if extra:
            raise UsageError(f"--install-infra does not take {', '.join(extra)}")
        if not args.openebs_manifest:
            raise UsageError("--install-infra needs --openebs-manifest")
        return args
    missing = [name for name, value in run_args.items() if value is None]
    if missing:
        raise UsageError(f"missing {', '.join(missing)}")
    if args.openebs_manifest:
        raise UsageError("--openebs-manifest is for --install-infra")
    if args.max_steps < 0:
        raise UsageError("--max-steps must not be negative")
    return args


def events_for_usage_error(argv):
    """Best effort: the events channel named on a command line that did not parse."""
    lenient = argparse.ArgumentParser(add_help=False)
    lenient.add_argument("--events-fd", type=int)
    lenient.add_argument("--events-file")
    try:
        known, _ = lenient.parse_known_args(argv)
        if known.events_fd is not None:
            return Events(fd=known.events_fd)
        if known.events_file:
            return Events(path=known.events_file)
    except (SystemExit, OSError, ValueError):
        pass
    return None


def aiopslab_package_dir():
    """Where `aiopslab` would be imported from, without importing it."""
    try:
        spec = importlib.util.find_spec("aiopslab")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return list(spec.submodule_search_locations)[0]
    return os.path.dirname(spec.origin) if spec.origin else None


# --------------------------------------------------------------------------- agent settings


def load_agent_settings(path):
    """agent.json, checked; ValueError with the reason when unusable."""
    try:
        with open(path, encoding="utf-8") as f:
            settings = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {path}: {err}") from err
    if not isinstance(settings, dict):
        raise ValueError(f"{path} must hold a JSON object")
    base_url = settings.get("base_url")
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ValueError(f"{path}: base_url must be an http(s) URL")
    if not isinstance(settings.get("model"), str) or not settings["model"]:
        raise ValueError(f"{path}: model must be a non-empty string")
    budget = settings.get("max_context_tokens", DEFAULT_MAX_CONTEXT_TOKENS)
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0):
        raise ValueError(f"{path}: max_context_tokens must be a positive integer")
    return settings


# --------------------------------------------------------------------------- prompts


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
        "- exec_shell takes a single quoted string and nothing else, e.g.\n"
        "```\n"
        'exec_shell("kubectl get pods -A")\n'
        "```\n"
        "- Finish with submit(...) in the form the instructions ask for."
    )


def build_task_message(instructions):
    """The first user message: the problem's instructions."""
    return instructions


# --------------------------------------------------------------------------- tokens and context


def tiktoken_cache_file(blobpath):
    """The file tiktoken reads `blobpath` from instead of downloading it (its
    own rule), or None when its cache is disabled."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        cache_dir = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        cache_dir = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if not cache_dir:
        return None
    return os.path.join(cache_dir, hashlib.sha1(blobpath.encode()).hexdigest())


def cached_cl100k():
    """tiktoken's cl100k_base when tiktoken is importable AND its data is
    cached; None otherwise (so counting never triggers a download). Called
    after AIOpsLab's import, which already loaded cl100k_base in-process."""
    cache_file = tiktoken_cache_file(CL100K_BLOB)
    if cache_file is None or not os.path.isfile(cache_file):
        return None
    try:
        import tiktoken

        return tiktoken.get_encoding("cl100k_base")
    except Exception:  # noqa: BLE001 - any failure means: estimate instead
        return None


class TokenCounter:
    """Counts a chat message's tokens: cl100k_base when available, else
    len(text) // 4; plus 4 per message for the chat format."""

    def __init__(self, encoding=None):
        self.encoding = encoding
        self.method = "tiktoken cl100k_base" if encoding is not None else "len(text) // 4"

    def count(self, message):
        text = message.get("content") or ""
        if self.encoding is not None:
            return 4 + len(self.encoding.encode(text, disallowed_special=()))
        return 4 + len(text) // 4


def fit_context(messages, counts, budget):
    """The messages to send within `budget` tokens: the system prompt (first)
    and the newest message always; the oldest turns in between are dropped
    until the rest fits, plus an assistant turn that would otherwise follow
    the system prompt directly. Returns (messages, dropped, before, after)."""
    before = sum(counts)
    if not budget or before <= budget or len(messages) <= 2:
        return list(messages), 0, before, before
    middle = range(1, len(messages) - 1)
    after, dropped = before, 0
    for index in middle:
        if after <= budget and messages[index].get("role") != "assistant":
            break
        after -= counts[index]
        dropped += 1
    kept = [messages[0]] + list(messages[1 + dropped :])
    return kept, dropped, before, after


# --------------------------------------------------------------------------- the LLM endpoint


class EndpointError(RuntimeError):
    """The LLM endpoint kept failing; the run is an infrastructure failure."""


class ChatEndpoint:
    """An OpenAI-compatible /chat/completions endpoint (the worker's loopback
    proxy), called with urllib."""

    def __init__(self, settings):
        self.base_url = settings["base_url"].rstrip("/")
        self.model = settings["model"]
        self.timeout = float(settings.get("request_timeout") or 120)
        self.retries = int(settings.get("retries") or 0)
        self.retry_delay = float(settings.get("retry_delay") or 0)
        self.sampling = {
            key: settings[key] for key in ("temperature", "top_p", "max_tokens") if settings.get(key) is not None
        }
        self.logprobs = bool(settings.get("logprobs"))
        self.top_logprobs = settings.get("top_logprobs")
        # No proxies from the environment: the endpoint is on loopback, and an
        # HTTP(S)_PROXY must not see (or break) the conversation.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def body(self, messages):
        body = {"model": self.model, "messages": messages}
        body.update(self.sampling)
        if self.logprobs:
            body["logprobs"] = True
            if self.top_logprobs is not None:
                body["top_logprobs"] = self.top_logprobs
        return body

    def _post(self, body, step, attempt):
        request = urllib.request.Request(
            self.base_url + "/chat/completions",
            data=json.dumps(body).encode("utf-8"),
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json",
                "X-Aiopslab-Step": str(step),
                "X-Aiopslab-Attempt": str(attempt),
            },
        )
        with self._opener.open(request, timeout=self.timeout) as response:
            return json.loads(response.read().decode("utf-8"))

    @staticmethod
    def _reply_text(payload):
        reply = payload["choices"][0]["message"]["content"]
        if not isinstance(reply, str):
            raise ValueError("the reply has no text content")
        return reply

    def complete(self, messages, step, events):
        """One chat completion, retried with exponential delay on endpoint
        errors. Returns (reply, latency_ms, attempts)."""
        body = self.body(messages)
        last_error = None
        for attempt in range(1, self.retries + 2):
            started = time.monotonic()
            try:
                reply = self._reply_text(self._post(body, step, attempt))
                return reply, (time.monotonic() - started) * 1000.0, attempt
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
                    f"LLM call failed (attempt {attempt} of {self.retries + 1}): {last_error}; "
                    f"retrying in {delay:.1f} s",
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
    """The agent AIOpsLab drives: `await get_action(text) -> str`.

    The whole conversation is kept; each call sends it trimmed to
    max_context_tokens. The HTTP call blocks the event loop on purpose: a
    SIGTERM then raises SystemExit right inside it, and nothing waits for a
    worker thread stuck on a hanging request."""

    def __init__(self, endpoint, events, counter, max_context_tokens):
        self.endpoint = endpoint
        self.events = events
        self.counter = counter
        self.budget = max_context_tokens
        self.messages = []
        self.counts = []
        self.step = 0
        self._warned_oversize = False

    def _append(self, role, content):
        message = {"role": role, "content": content}
        self.messages.append(message)
        self.counts.append(self.counter.count(message))

    def init_context(self, task_desc, instructions, actions):
        self.system_prompt = build_system_prompt(task_desc, actions)
        self.task_message = build_task_message(instructions)
        self.messages, self.counts = [], []
        self._append("system", self.system_prompt)
        self._append("user", self.task_message)

    def _request_messages(self):
        """The conversation to send this step, trimmed when over budget."""
        request, dropped, before, after = fit_context(self.messages, self.counts, self.budget)
        if dropped:
            self.events.emit(
                "context_trimmed",
                step=self.step,
                dropped_messages=dropped,
                tokens_before=before,
                tokens_after=after,
                budget=self.budget,
            )
        if self.budget and after > self.budget and not self._warned_oversize:
            self._warned_oversize = True
            self.events.log(
                f"the system prompt and the newest message alone hold ~{after} tokens, over the "
                f"{self.budget}-token budget; sending them anyway",
                level="warning",
                step=self.step,
            )
        return request

    async def get_action(self, input: str) -> str:
        self.step += 1
        self._append("user", input)
        request = self._request_messages()
        reply, latency_ms, attempts = self.endpoint.complete(request, self.step, self.events)
        self._append("assistant", reply)
        self.events.emit(
            "llm_call", step=self.step, input=input, response=reply, attempts=attempts, latency_ms=latency_ms
        )
        return reply


# --------------------------------------------------------------------------- AIOpsLab


class AIOpsLab:
    """The pieces of AIOpsLab the run mode uses, imported on demand (the
    import itself needs ~/.kube/config and tiktoken's data)."""

    def __init__(self):
        from aiopslab.orchestrator import Orchestrator
        from aiopslab.orchestrator.orchestrator import exit_cleanup_fault
        from aiopslab.session import Session
        from aiopslab.utils.critical_section import CriticalSection
        from aiopslab.utils.status import SubmissionStatus

        self.Orchestrator = Orchestrator
        self.exit_cleanup_fault = exit_cleanup_fault
        self.Session = Session
        self.CriticalSection = CriticalSection
        self.SubmissionStatus = SubmissionStatus


class RunReport:
    """What the run reports after the loop: the result as soon as the
    evaluation exists, then how the cleanup went."""

    def __init__(self, events, results_dir):
        self.events = events
        self.results_dir = pathlib.Path(results_dir)
        self.agent = None
        self.setup_seconds = None
        self.result_sent = False
        self.eval_finished = None

    def step(self, step, action, api, env_response):
        self.events.emit("step", step=step, action=action, api=api, env_response=env_response)

    def result(self, orch, results, final_state, eval_seconds):
        session = orch.session
        agent_seconds = session.get_duration() if session.start_time and session.end_time else None
        self.events.emit(
            "result",
            results=results or {},
            final_state=final_state,
            solution=session.solution,
            framework_overhead=framework_overhead(orch, results),
            steps=self.agent.step if self.agent else None,
            phases={
                "setup_seconds": self.setup_seconds,
                "agent_seconds": agent_seconds,
                "eval_seconds": eval_seconds,
            },
        )
        self.result_sent = True
        self.eval_finished = time.monotonic()

    def cleanup_seconds(self):
        return time.monotonic() - self.eval_finished if self.eval_finished is not None else None

    def session_file(self, orch):
        """AIOpsLab's session file `<results_dir>/<uuid>_<start>.json`, if written."""
        session = getattr(orch, "session", None)
        if session is None:
            return None
        path = self.results_dir / f"{session.session_id}_{session.start_time}.json"
        return str(path) if path.is_file() else None

    def cleanup_done(self, orch):
        self.events.emit("cleanup", cleanup_seconds=self.cleanup_seconds(), session_file=self.session_file(orch))

    def cleanup_failed(self, orch, stage, err, trace):
        self.events.emit(
            "cleanup_error",
            stage=stage,
            message=f"{type(err).__name__}: {err}",
            traceback=trace,
            cleanup_seconds=self.cleanup_seconds(),
            session_file=self.session_file(orch),
        )


def framework_overhead(orch, results):
    """Seconds since init_problem started, minus the agent's time-to-finish
    (the TT* result), as AIOpsLab computes it - but measured when the
    evaluation ends, since the result is reported before the cleanup. None
    without a TT* key (AIOpsLab itself raises then)."""
    started = getattr(orch, "execution_start_time", None)
    key = next((k for k in ("TTD", "TTL", "TTA", "TTM") if k in (results or {})), None)
    if started is None or key is None:
        return None
    return (time.time() - started) - results[key]


def final_state_of(env_response, aio):
    """The final env response as the result reports it: the submission
    status by name (VALID_SUBMISSION), else the last env text."""
    if isinstance(env_response, aio.SubmissionStatus):
        return env_response.name
    return to_jsonable(env_response)


def define_orchestrators(aio):
    """The driver's two subclasses of AIOpsLab's Orchestrator (defined once
    AIOpsLab is imported)."""

    class ObservedOrchestrator(aio.Orchestrator):
        """AIOpsLab's orchestrator, unchanged except that every environment
        response is reported as a step (the stock mode runs this one)."""

        report = None
        last_env_response = ""  # what AIOpsLab's loop starts from, kept when no step runs

        async def ask_env(self, input):
            env_response = await super().ask_env(input)
            self.last_env_response = env_response
            self.report.step(self.report.agent.step, input, self.api_name(input), env_response)
            return env_response

        def api_name(self, reply):
            """The API name as AIOpsLab's own parser reads it; None when it refuses the reply."""
            try:
                return self.parser.parse(reply)["api_name"]
            except Exception:  # noqa: BLE001 - ResponseParsingError (or any parser failure)
                return None

    class WarmOrchestrator(ObservedOrchestrator):
        """AIOpsLab's problem lifecycle without the shared infrastructure:
        init_problem and start_problem do what AIOpsLab's do, minus the
        OpenEBS install/uninstall and the Prometheus deploy/teardown (the
        worker installs both once per cluster, in infra mode)."""

        _workload = None  # a coroutine workload, started once the event loop runs
        _workload_task = None

        def init_problem(self, problem_id):
            self.execution_start_time = time.time()
            self.session = aio.Session(results_dir=self.results_dir)
            prob = self.probs.get_problem_instance(problem_id)
            deployment = self.probs.get_problem_deployment(problem_id)
            self.session.set_problem(prob, pid=problem_id)
            self.session.set_agent(self.agent_name)
            self.report.events.log(
                f"warm init_problem: {deployment} deployment; OpenEBS and Prometheus are left as installed"
            )

            prob.app.delete()
            prob.app.deploy()
            # As AIOpsLab: the fault and its atexit recovery hook go together.
            with aio.CriticalSection():
                prob.inject_fault()
                atexit.register(aio.exit_cleanup_fault, prob=prob)
            self._start_workload(prob)

            return prob.get_task_description(), prob.get_instructions(), prob.get_available_actions()

        def _start_workload(self, prob):
            # A coroutine workload needs the event loop, which only runs in start_problem.
            if inspect.iscoroutinefunction(prob.start_workload):
                self._workload = prob.start_workload
            else:
                prob.start_workload()

        async def start_problem(self, max_steps):
            assert self.session is not None
            if self._workload is not None:
                self._workload_task = asyncio.create_task(self._workload())  # referenced, so not collected
            env_response = await self._agent_loop(max_steps)
            results = self._evaluate(env_response)
            self._clean_up()
            # AIOpsLab's return value; its framework_overhead, taken now, includes the cleanup.
            return {
                "history": self.session.history,
                "final_state": env_response,
                "results": results,
                "framework_overhead": framework_overhead(self, results),
            }

        async def _agent_loop(self, max_steps):
            """AIOpsLab's loop: ends at the first valid submission or after
            max_steps; on an exception the fault is recovered and it re-raises."""
            action_instr = NEXT_ACTION
            env_response = ""
            self.session.start()
            try:
                for _ in range(max_steps):
                    action = await self.ask_agent(action_instr)
                    self.sprint.agent(action)
                    env_response = await self.ask_env(action)
                    self.sprint.service(env_response)
                    if env_response == aio.SubmissionStatus.VALID_SUBMISSION:
                        break
                    elif env_response == aio.SubmissionStatus.INVALID_SUBMISSION:
                        raise ValueError("Invalid submission!")
                    action_instr = env_response + "\n" + NEXT_ACTION
            except Exception:
                with aio.CriticalSection():
                    self.session.problem.recover_fault()
                    atexit.unregister(aio.exit_cleanup_fault)
                raise
            self.session.end()
            return env_response

        def _evaluate(self, env_response):
            """Evaluates (timed), records the results and reports them at once."""
            results = {}
            started = time.monotonic()
            if env_response != aio.SubmissionStatus.INVALID_SUBMISSION:
                results = self.session.problem.eval(
                    self.session.solution, self.session.history, self.session.get_duration()
                )
                self.sprint.result(results)
            eval_seconds = time.monotonic() - started
            self.session.set_results(results)
            self.report.result(self, results, final_state_of(env_response, aio), eval_seconds)
            return results

        def _recover_fault(self):
            with aio.CriticalSection():
                try:
                    self.session.problem.recover_fault()
                finally:
                    # One recovery attempt; the app cleanup that follows removes the rest.
                    atexit.unregister(aio.exit_cleanup_fault)

        def _write_session(self):
            self.session.to_json()
            if getattr(self, "use_wandb", False):
                self.session.to_wandb()

        def _clean_up(self):
            """Everything after the evaluation, each stage on its own so one
            failing does not skip the others; the first failure is reported."""
            stages = (
                ("session_file", self._write_session),
                ("recover_fault", self._recover_fault),
                ("app_cleanup", self.session.problem.app.cleanup),
            )
            failure = None
            for stage, run in stages:
                try:
                    run()
                except Exception as err:  # noqa: BLE001 - reported, the result is already out
                    self.report.events.log(f"cleanup stage {stage} failed: {type(err).__name__}: {err}",
                                           level="warning")
                    if failure is None:
                        failure = (stage, err, traceback.format_exc())
            if failure is None:
                self.report.cleanup_done(self)
            else:
                self.report.cleanup_failed(self, *failure)

    return ObservedOrchestrator, WarmOrchestrator


def watch_stock_eval(orch, report, aio):
    """Stock mode: wraps the problem's eval (an instance attribute shadows
    the method) so the result is reported as soon as it returns, before
    AIOpsLab's own cleanup and teardown run."""
    problem = orch.session.problem
    evaluate = problem.eval

    def reported_eval(*args, **kwargs):
        started = time.monotonic()
        results = evaluate(*args, **kwargs)
        report.result(orch, results, final_state_of(orch.last_env_response, aio), time.monotonic() - started)
        return results

    problem.eval = reported_eval


def run_problem(args, events):
    """Run mode. Returns the exit code."""
    stock = args.stock_orchestrator
    try:
        settings = load_agent_settings(args.agent_config)
    except ValueError as err:
        events.error("driver_usage", str(err), with_traceback=False)
        return EXIT_USAGE

    try:
        aio = AIOpsLab()
    except Exception as err:  # noqa: BLE001 - report whatever broke the import
        events.error(
            "aiopslab_import",
            f"cannot import aiopslab's orchestrator ({type(err).__name__}: {err}); it needs an AIOpsLab "
            "checkout installed with `pip install -e .`, ~/.kube/config and tiktoken's cl100k_base data cached",
        )
        return EXIT_USAGE

    report = RunReport(events, args.results_dir)
    counter = TokenCounter(cached_cl100k())
    events.log(f"context budget {settings.get('max_context_tokens', DEFAULT_MAX_CONTEXT_TOKENS)} tokens, "
               f"counted with {counter.method}")
    observed, warm = define_orchestrators(aio)
    orch = None
    try:
        agent = LlmAgent(
            ChatEndpoint(settings), events, counter, settings.get("max_context_tokens", DEFAULT_MAX_CONTEXT_TOKENS)
        )
        report.agent = agent
        orch = (observed if stock else warm)(results_dir=pathlib.Path(args.results_dir))
        orch.report = report
        orch.register_agent(agent, name=settings.get("agent_name") or DEFAULT_AGENT_NAME)

        events.log(f"init_problem({args.problem_id!r}): deploying the application and injecting the fault")
        started = time.monotonic()
        task_desc, instructions, actions = orch.init_problem(args.problem_id)
        report.setup_seconds = time.monotonic() - started
        if stock:
            watch_stock_eval(orch, report, aio)
        actions = dict(actions or {})
        agent.init_context(task_desc, instructions, actions)
        events.emit(
            "problem",
            task_desc=task_desc,
            instructions=instructions,
            actions=actions,
            system_prompt=agent.system_prompt,
            task_message=agent.task_message,
            setup_seconds=report.setup_seconds,
        )

        events.log(f"start_problem(max_steps={args.max_steps}): the agent loop begins")
        out = asyncio.run(orch.start_problem(max_steps=args.max_steps))
    except EndpointError as err:
        events.error("llm_endpoint_error", str(err), with_traceback=False)
        return EXIT_LLM
    except SystemExit as err:
        if err.code == EXIT_SIGTERM:
            events.log("stopped by SIGTERM", level="warning")
        raise
    except BaseException as err:  # noqa: BLE001 - every failure must reach the worker
        if report.result_sent:
            # Stock mode: AIOpsLab's own teardown raised after the evaluation.
            report.cleanup_failed(orch, "stock_teardown", err, traceback.format_exc())
            return EXIT_OK
        events.error("aiopslab_error", f"{type(err).__name__}: {err}")
        return EXIT_AIOPSLAB

    if stock:
        if not report.result_sent:
            # No evaluation ran (AIOpsLab skips it after an invalid submission).
            out = out if isinstance(out, dict) else {}
            report.result(orch, out.get("results") or {}, final_state_of(out.get("final_state"), aio), None)
        report.cleanup_done(orch)
    return EXIT_OK


# --------------------------------------------------------------------------- infra mode


class InfraError(RuntimeError):
    """A shared-infrastructure step failed."""


def checked_command(kubectl, command):
    """Runs `command` through AIOpsLab's KubeCtl.exec_command (a shell), which
    hides exit statuses: the status is echoed after the output and checked."""
    marker = "__aiopslab_driver_exit="
    output = kubectl.exec_command(f"{command} 2>&1; echo \"{marker}$?\"")
    text, _, status = output.rpartition(marker)
    if status.strip() != "0":
        raise InfraError(f"`{command}` failed (exit {status.strip() or '?'}): {text.strip()[-2000:]}")
    return text


def openebs_ready(kubectl):
    """True when the openebs namespace has pods and every one is ready (or
    completed), the condition AIOpsLab's wait_for_ready waits for."""
    template = '{range .items[*]}{.status.phase}{" "}{.status.containerStatuses[*].ready}{"\\n"}{end}'
    output = kubectl.exec_command(f"kubectl get pods -n {OPENEBS_NAMESPACE} -o jsonpath={shlex.quote(template)}")
    pods = [line.split() for line in output.splitlines() if line.strip()]
    if not pods or any(not pod or pod[0] not in POD_PHASES for pod in pods):
        return False  # no pods, or not a pod listing at all (an error message)
    return all(pod[0] == "Succeeded" or (len(pod) > 1 and all(r == "true" for r in pod[1:])) for pod in pods)


def install_openebs(kubectl, manifest, events):
    """OpenEBS as AIOpsLab's init_problem installs it: apply the operator
    manifest, make openebs-hostpath the default storage class, wait for the
    openebs pods (AIOpsLab's wait raises on timeout)."""
    started = time.monotonic()
    if openebs_ready(kubectl):
        events.emit("infra", component="openebs", state="already_present", seconds=time.monotonic() - started)
        return
    events.log(f"installing OpenEBS from {manifest}")
    checked_command(kubectl, f"kubectl apply -f {shlex.quote(manifest)}")
    checked_command(kubectl, DEFAULT_STORAGE_CLASS_PATCH)
    kubectl.wait_for_ready(OPENEBS_NAMESPACE)
    events.emit("infra", component="openebs", state="installed", seconds=time.monotonic() - started)


def helm_release_deployed(helm, release, namespace):
    """Whether `helm status` says the release is deployed (the check
    AIOpsLab's Prometheus.deploy makes before skipping)."""
    try:
        status = helm.status(release_name=release, namespace=namespace)
    except Exception:  # noqa: BLE001 - RuntimeError when helm has no such release
        return False
    return any(
        line.strip().startswith("STATUS:") and line.split(":", 1)[1].strip().lower() == "deployed"
        for line in status.splitlines()
    )


def install_prometheus(prometheus_class, helm, events):
    """AIOpsLab's Prometheus().deploy() (which itself skips a deployed
    release), checked before and after."""
    started = time.monotonic()
    prometheus = prometheus_class()
    release = (getattr(prometheus, "helm_configs", None) or {}).get("release_name") or "prometheus"
    namespace = prometheus.namespace
    present = helm_release_deployed(helm, release, namespace)
    if not present:
        events.log(f"installing Prometheus (helm release {release} in {namespace})")
    prometheus.deploy()
    if not helm_release_deployed(helm, release, namespace):
        raise InfraError(f"helm release {release} in namespace {namespace} is not deployed after Prometheus().deploy()")
    events.emit(
        "infra",
        component="prometheus",
        state="already_present" if present else "installed",
        seconds=time.monotonic() - started,
    )


def install_infra(args, events):
    """Infra mode. Returns the exit code."""
    try:
        from aiopslab.service.helm import Helm
        from aiopslab.service.kubectl import KubeCtl
        from aiopslab.service.telemetry.prometheus import Prometheus
    except Exception as err:  # noqa: BLE001 - report whatever broke the import
        events.error("aiopslab_import", f"cannot import aiopslab's services ({type(err).__name__}: {err})")
        return EXIT_USAGE

    started = time.monotonic()
    try:
        kubectl = KubeCtl()
        install_openebs(kubectl, args.openebs_manifest, events)
        install_prometheus(Prometheus, Helm, events)
    except SystemExit:
        raise
    except BaseException as err:  # noqa: BLE001 - every failure must reach the worker
        events.error("infra_error", f"{type(err).__name__}: {err}")
        return EXIT_INFRA
    events.emit("infra_done", seconds=time.monotonic() - started)
    return EXIT_OK


# --------------------------------------------------------------------------- main


def on_sigterm(signum, frame):
    # SystemExit unwinds through AIOpsLab (which recovers the fault) and runs atexit hooks.
    raise SystemExit(EXIT_SIGTERM)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
        events = Events(fd=args.events_fd, path=args.events_file)
    except (UsageError, OSError, ValueError) as err:
        sys.stderr.write(f"aiopslab_driver: {err}\n")
        fallback = events_for_usage_error(argv)
        if fallback is not None:
            fallback.error("driver_usage", f"bad arguments: {err}", with_traceback=False)
        return EXIT_USAGE

    signal.signal(signal.SIGTERM, on_sigterm)
    mode = "infra" if args.install_infra else "stock" if args.stock_orchestrator else "warm"
    events.emit(
        "hello",
        protocol=PROTOCOL_VERSION,
        python=sys.version.split()[0],
        aiopslab=aiopslab_package_dir(),
        orchestrator=mode,
    )
    if args.install_infra:
        return install_infra(args, events)
    return run_problem(args, events)


if __name__ == "__main__":
    sys.exit(main())
