"""FAKE aiopslab.generators.workload.wrk.Wrk: the real one runs wrk2 as a
Kubernetes Job; the fake starts a `sleep 600` child of this process and
leaves it running, as a real run may leave subprocesses behind (the worker
must kill the driver's whole process group)."""

import subprocess

from aiopslab import _fake


class Wrk:
    def __init__(self, rate, dist="norm", connections=2, duration=6, threads=2, latency=True):
        self.rate = rate
        self.dist = dist
        self.connections = connections
        self.duration = duration
        self.threads = threads
        self.latency = latency

    def start_workload(self, payload_script=None, url=None):
        child = subprocess.Popen(["sleep", "600"])
        _fake.record("workload", child.pid)
        return child
