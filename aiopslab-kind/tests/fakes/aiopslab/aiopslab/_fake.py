"""FAKE-only helpers of the fake aiopslab package (no counterpart in the real one).

The test knobs, all read from the environment when used:

- FAKE_AIOPSLAB_STATE=<dir>: `calls.log` (one lifecycle call a line),
  `env.json` (what the orchestrator's process saw), `workload.pid`.
- FAKE_AIOPSLAB_CRASH=init_problem|start_problem: SIGKILL this process there.
- FAKE_AIOPSLAB_TEARDOWN_FAIL=1: the `openebs` namespace never goes away.
- FAKE_AIOPSLAB_CLEANUP_FAIL=1: no other namespace goes away either (so the
  application's cleanup raises its timeout).
- FAKE_AIOPSLAB_MAX_WAIT=<seconds>: replaces the real 300 s (and other) waits
  of `KubeCtl.wait_for_ready` / `wait_for_namespace_deletion` (default 2).
- FAKE_AIOPSLAB_DELAYS="deploy=0.5,openebs=1,prometheus=1,inject=0.1,eval=0.1,cleanup=0.3,teardown=1":
  simulated cost of those phases, in seconds (default none).
"""

import json
import os
import signal
import sys
import time

DEFAULT_MAX_WAIT = 2.0


def _state_dir():
    state = os.environ.get("FAKE_AIOPSLAB_STATE")
    if state:
        os.makedirs(state, exist_ok=True)
    return state


def record(what, value=None):
    """Appends `<what> <value>` to calls.log (workload pids also go to workload.pid)."""
    state = _state_dir()
    if not state:
        return
    with open(os.path.join(state, "calls.log"), "a", encoding="utf-8") as f:
        f.write(f"{what} {'' if value is None else value}".rstrip() + "\n")
    if what == "workload":
        with open(os.path.join(state, "workload.pid"), "w", encoding="utf-8") as f:
            f.write(str(value))


def record_env():
    """Writes env.json: the isolation-relevant variables, process ids and the
    names (never the values) of every environment variable this process has."""
    state = _state_dir()
    if not state:
        return
    seen = {key: os.environ.get(key) for key in ("HOME", "KUBECONFIG", "AIOPSLAB_CLUSTER", "PYTHONPATH")}
    seen.update(
        cwd=os.getcwd(),
        pid=os.getpid(),
        pgid=os.getpgrp(),
        uid=os.getuid(),
        env_names=sorted(os.environ),
    )
    with open(os.path.join(state, "env.json"), "w", encoding="utf-8") as f:
        json.dump(seen, f)


def crash_if(where):
    """FAKE_AIOPSLAB_CRASH=<where>: die by SIGKILL here, as a crashed interpreter would."""
    if os.environ.get("FAKE_AIOPSLAB_CRASH") == where:
        sys.stderr.write(f"fake aiopslab: simulated crash in {where}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def namespace_stuck(namespace):
    """Whether a knob keeps `namespace` from ever being deleted (stuck in Terminating)."""
    if namespace == "openebs":
        return os.environ.get("FAKE_AIOPSLAB_TEARDOWN_FAIL") == "1"
    return os.environ.get("FAKE_AIOPSLAB_CLEANUP_FAIL") == "1"


def max_wait():
    """The fake's replacement for every real `max_wait`."""
    try:
        return float(os.environ.get("FAKE_AIOPSLAB_MAX_WAIT") or DEFAULT_MAX_WAIT)
    except ValueError:
        return DEFAULT_MAX_WAIT


def delay(phase):
    """Sleeps the simulated cost of `phase` (FAKE_AIOPSLAB_DELAYS)."""
    for item in (os.environ.get("FAKE_AIOPSLAB_DELAYS") or "").split(","):
        name, _, seconds = item.partition("=")
        if name.strip() == phase:
            try:
                time.sleep(max(0.0, float(seconds)))
            except ValueError:
                pass
            return


def load_kube_config(config_file=None, context=None):
    """Stand-in for `kubernetes.config.load_kube_config`: the file must exist
    (KUBECONFIG, else ~/.kube/config) and name the context when one is asked
    for. It never talks to a cluster."""
    path = config_file or (os.environ.get("KUBECONFIG") or "~/.kube/config").split(os.pathsep)[0]
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise RuntimeError(f"Invalid kube-config file. No configuration found at {path}")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if context and f"name: {context}" not in text:
        raise RuntimeError(f"Invalid kube-config file. Expected key {context} in kube-config ({path})")
    return path
