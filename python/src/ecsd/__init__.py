"""Run ecsd, the Amazon ECS-compatible control plane, from Python: `Server` starts the `ecsd`
command this package installs and stops it again; the pytest plugin (`ecsd.pytest_plugin`)
gives tests a running server as the `ecsd` fixture."""

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile

__all__ = ["Server", "binary"]


def binary():
    """The `ecsd` command installed with this package (else the one on the PATH)."""
    installed = os.path.join(sysconfig.get_path("scripts"), "ecsd" + (".exe" if sys.platform == "win32" else ""))
    if os.path.exists(installed):
        return installed
    found = shutil.which("ecsd")
    if found is None:
        raise FileNotFoundError("no ecsd command: install the ecsd wheel")
    return found


def options(settings):
    """Command-line options for `ecsd serve` from keyword settings: `simulate_agents=2` is
    `--simulate-agents 2`, `no_throttle=True` is `--no-throttle`, a list repeats its option."""
    args = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, (list, tuple)):
            for item in value:
                args += [flag, str(item)]
        else:
            args += [flag, str(value)]
    return args


class Server:
    """`ecsd serve` on a free loopback port, with a data directory of its own (a temporary one
    unless `data_dir` is given). Use as a context manager, or call `start()` and `stop()`."""

    region = "us-east-1"

    def __init__(self, data_dir=None, **settings):
        self.settings = settings
        self._temporary = None if data_dir else tempfile.TemporaryDirectory(prefix="ecsd-")
        self.data_dir = str(data_dir or self._temporary.name)
        self.process = None
        self.endpoint_url = None

    def start(self):
        command = [binary(), "serve", "--listen", "127.0.0.1:0", "--data-dir", self.data_dir, *options(self.settings)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if not line.startswith("ecsd listening on "):
            self.process.wait(timeout=30)
            raise RuntimeError(f"ecsd did not start: {self.process.stderr.read().strip() or line.strip()}")
        self.endpoint_url = line.split(" on ", 1)[1].strip()
        return self

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process:
            self.process.stdout.close()
            self.process.stderr.close()
        if self._temporary:
            self._temporary.cleanup()

    def client(self, service="ecs"):
        """A boto3 client of this server, signed with the development credentials."""
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
