"""FAKE-only helper: records what the fake saw in $FAKE_AIOPSLAB_STATE."""

import json
import os
import signal
import sys


def record(what, value=None):
    state = os.environ.get("FAKE_AIOPSLAB_STATE")
    if not state:
        return
    os.makedirs(state, exist_ok=True)
    with open(os.path.join(state, "calls.log"), "a", encoding="utf-8") as f:
        f.write(f"{what} {value if value is not None else ''}".rstrip() + "\n")
    if what == "workload":
        with open(os.path.join(state, "workload.pid"), "w", encoding="utf-8") as f:
            f.write(str(value))


def record_env():
    state = os.environ.get("FAKE_AIOPSLAB_STATE")
    if not state:
        return
    os.makedirs(state, exist_ok=True)
    seen = {key: os.environ.get(key) for key in ("HOME", "KUBECONFIG", "AIOPSLAB_CLUSTER", "PYTHONPATH")}
    seen["cwd"] = os.getcwd()
    seen["pid"] = os.getpid()
    seen["pgid"] = os.getpgrp()
    with open(os.path.join(state, "env.json"), "w", encoding="utf-8") as f:
        json.dump(seen, f)


def crash_if(where):
    """FAKE_AIOPSLAB_CRASH=<where>: die by SIGKILL here, as a crashed interpreter would."""
    if os.environ.get("FAKE_AIOPSLAB_CRASH") == where:
        sys.stderr.write(f"fake aiopslab: simulated crash in {where}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
