"""FAKE aiopslab.observer.trace_api: canned traces instead of Jaeger queries."""

import os


class TraceAPI:
    def __init__(self, namespace):
        self.namespace = namespace

    def extract_traces(self, start_time, end_time):
        return [{"trace_id": "fake-trace", "service": "frontend", "duration_us": 1234, "start": start_time}]

    def process_traces(self, traces):
        return traces

    def save_traces(self, traces, save_path):
        os.makedirs(save_path, exist_ok=True)
        path = os.path.join(save_path, f"traces_{self.namespace}.csv")
        with open(path, "w", encoding="utf-8") as f:
            f.write("trace_id,service,duration_us\n")
            for trace in traces:
                f.write(f"{trace['trace_id']},{trace['service']},{trace['duration_us']}\n")
        return f"Traces data exported to: {path}"
