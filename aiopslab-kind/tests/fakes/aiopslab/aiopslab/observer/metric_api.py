"""FAKE aiopslab.observer.metric_api: canned metrics instead of Prometheus queries."""

import os


class PrometheusAPI:
    def __init__(self, url, namespace):
        self.url = url
        self.namespace = namespace

    def initialize_pod_and_service_lists(self, namespace):
        self.namespace = namespace

    def export_all_metrics(self, start_time, end_time, save_path, step=15):
        """Writes one canned CSV and returns the directory, as the real one returns its save dir."""
        directory = os.path.join(save_path, f"{self.namespace}_{int(end_time.timestamp())}")
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "cpu_usage.csv"), "w", encoding="utf-8") as f:
            f.write("timestamp,pod,value\n")
            f.write(f"{int(start_time.timestamp())},fake-pod,0.01\n")
            f.write(f"{int(end_time.timestamp())},fake-pod,0.02\n")
        return directory
