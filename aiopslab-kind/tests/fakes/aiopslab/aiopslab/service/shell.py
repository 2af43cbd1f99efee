"""FAKE aiopslab.service.shell.Shell: where exec_shell runs, chosen by
config.yml's k8s_host as the real one. With `localhost` (the fake's setting)
the command is a real `sh -c` child of this process with this process's
environment; output rules as the real `local_exec`."""

import subprocess

from aiopslab.paths import config


class Shell:
    @staticmethod
    def exec(command, input_data=None, cwd=None, timeout=30):
        k8s_host = config.get("k8s_host", "localhost")
        if k8s_host == "kind":
            return Shell.docker_exec("kind-control-plane", command, timeout=timeout)
        if k8s_host == "localhost":
            return Shell.local_exec(command, input_data, cwd, timeout=timeout)
        raise RuntimeError(f"Failed to execute command via SSH: {command}\nError: the fake has no SSH")

    @staticmethod
    def local_exec(command, input_data=None, cwd=None, timeout=30):
        if input_data is not None:
            input_data = input_data.encode("utf-8")
        try:
            out = subprocess.run(
                command,
                input=input_data,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                shell=True,
                cwd=cwd,
                timeout=timeout,
            )
        except Exception as e:  # a timeout too, as the real one
            raise RuntimeError(f"Failed to execute command: {command}\nError: {e}")
        if out.returncode != 0:
            return f"[ERROR] Command execution failed: {out.stderr.decode('utf-8')}"
        return out.stdout.decode("utf-8") + out.stderr.decode("utf-8")

    @staticmethod
    def docker_exec(container_name, command, timeout=30):
        escaped = command.replace('"', '\\"')
        try:
            out = subprocess.run(
                f'docker exec {container_name} sh -c "{escaped}"',
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                shell=True,
                timeout=timeout,
            )
        except Exception as e:
            raise RuntimeError(f"Failed to execute command in Docker container: {container_name}\nError: {e}")
        if out.returncode != 0:
            return f"[ERROR] Docker command execution failed: {out.stderr.decode('utf-8')}"
        return out.stdout.decode("utf-8")
