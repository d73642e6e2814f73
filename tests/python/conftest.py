"""Starts the real ecsd binary on a loopback port for each test and gives boto3 clients for it."""

import hashlib
import os
import pathlib
import signal
import subprocess

import boto3
import pytest

REGION = "us-east-1"
ACCOUNT = "123456789012"


def ecsd_binary():
    binary = os.environ.get("ECSD_BIN")
    if not binary:
        pytest.fail("ECSD_BIN must name the ecsd binary (scripts/test sets it)")
    return binary


def postgres_database(name):
    """A PostgreSQL database of its own for a test (created if missing), when the suite runs
    against PostgreSQL (ECSD_TEST_POSTGRES names a database to connect to); else None. Its name
    starts with the run's prefix (ECSD_TEST_DB_PREFIX), so that the run can drop exactly its own."""
    admin = os.environ.get("ECSD_TEST_POSTGRES")
    if not admin:
        return None
    prefix = os.environ.get("ECSD_TEST_DB_PREFIX", "ecsd_test")
    database = f"{prefix}_p_" + hashlib.sha1(str(name).encode()).hexdigest()[:16]
    exists = subprocess.run(
        ["psql", admin, "-Atc", f"SELECT 1 FROM pg_database WHERE datname = '{database}'"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    if not exists:
        subprocess.run(["psql", admin, "-qc", f"CREATE DATABASE {database}"], check=True, capture_output=True)
    return admin.rsplit("/", 1)[0] + "/" + database


class Ecsd:
    """One ecsd process on a data directory (and, against PostgreSQL, a database of its own);
    can be stopped, killed and started again."""

    def __init__(self, data_dir, extra_args=(), store=None):
        self.data_dir = data_dir
        self.extra_args = list(extra_args)
        self.store = store or postgres_database(data_dir)
        self.process = None
        self.url = None

    def start(self):
        store = ["--store", self.store] if self.store else []
        self.process = subprocess.Popen(
            [ecsd_binary(), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(self.data_dir), *store, *self.extra_args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = self.process.stdout.readline()
        assert line.startswith("ecsd listening on http://"), f"unexpected first line: {line!r}"
        self.url = line.split(" on ", 1)[1].strip()
        return self

    def stop(self, sig=signal.SIGTERM):
        self.process.send_signal(sig)
        code = self.process.wait(timeout=30)
        if sig == signal.SIGTERM:
            assert code == 0, f"ecsd exited with {code} on SIGTERM"

    def client(self):
        return boto3.client(
            "ecs",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )


@pytest.fixture
def ecsd(tmp_path):
    server = Ecsd(tmp_path / "data").start()
    yield server
    if server.process.poll() is None:
        server.stop(signal.SIGKILL)


@pytest.fixture
def ecs(ecsd):
    return ecsd.client()


def cli_env():
    env = dict(os.environ)
    env.update(
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    return env


@pytest.fixture
def aws_cli(ecsd):
    """Runs `aws ecs ...` against the server and returns the parsed JSON output."""
    import json

    aws = pathlib.Path(os.environ.get("AWS_CLI", "aws"))

    def run(*args):
        out = subprocess.run(
            [str(aws), "ecs", *args, "--endpoint-url", ecsd.url, "--output", "json"],
            env=cli_env(),
            check=True,
            capture_output=True,
            text=True,
        )
        return json.loads(out.stdout) if out.stdout.strip() else None

    return run
