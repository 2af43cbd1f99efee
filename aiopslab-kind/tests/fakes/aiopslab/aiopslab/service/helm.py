"""FAKE aiopslab.service.helm.Helm: the real class's helm command lines
(`helm dependency update <chart>` before installing a local chart,
`helm install <release> <chart> -n <ns> --create-namespace`, uninstall only
when `helm list` shows the release, `status` raising RuntimeError when helm
fails), run with `shell=True` as the real ones. Like the real `install`, a
failing `helm install` is printed, not raised."""

import os
import subprocess

from aiopslab.service.kubectl import KubeCtl


def _run(command):
    process = subprocess.Popen(command, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    output, error = process.communicate()
    return process.returncode, output.decode("utf-8"), error.decode("utf-8")


class Helm:
    @staticmethod
    def _validate_chart_path(chart_path, remote_chart):
        if not remote_chart and chart_path and not os.path.exists(chart_path):
            raise FileNotFoundError(f"Helm chart not found at: {chart_path}")

    @staticmethod
    def install(**args):
        release_name = args.get("release_name")
        chart_path = args.get("chart_path")
        namespace = args.get("namespace")
        remote_chart = args.get("remote_chart", False)
        Helm._validate_chart_path(chart_path, remote_chart)
        if not remote_chart:
            _run(f"helm dependency update {chart_path}")
        command = f"helm install {release_name} {chart_path} -n {namespace} --create-namespace"
        if args.get("version"):
            command += f" --version {args['version']}"
        if args.get("extra_args"):
            command += " " + " ".join(args["extra_args"])
        _, output, error = _run(command)
        print(error or output)

    @staticmethod
    def uninstall(**args):
        release_name = args.get("release_name")
        namespace = args.get("namespace")
        if not Helm.exists_release(release_name, namespace):
            print(f"Release {release_name} does not exist. Skipping uninstall.")
            return
        _, output, error = _run(f"helm uninstall {release_name} -n {namespace}")
        print(error or output)

    @staticmethod
    def exists_release(release_name, namespace):
        code, output, error = _run(f"helm list -n {namespace}")
        if code != 0:
            print(error)
            return False
        return release_name in output

    @staticmethod
    def status(release_name, namespace):
        if not release_name or not namespace:
            raise ValueError("Both release_name and namespace must be provided")
        code, output, error = _run(f"helm status {release_name} -n {namespace}")
        if code != 0:
            raise RuntimeError(f"Failed to get status for release {release_name}: {error}")
        return output.strip()

    @staticmethod
    def assert_if_deployed(namespace):
        KubeCtl().wait_for_ready(namespace)
        return True
