"""`GET /metrics`: Prometheus' text format, read with Prometheus' own parser; open to loopback
callers, signed and permitted (`ecsd:ReadMetrics`) for everyone else."""

import http.client
import subprocess
import time

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from prometheus_client.parser import text_string_to_metric_families

from conftest import Ecsd, ecsd_binary

FAST = {"Delay": 1, "MaxAttempts": 30}


def get(url, path="/metrics", headers=None):
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    return response.status, response.read().decode()


def samples(text):
    """Every sample, as (name, labels) -> value, parsed as Prometheus parses it."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def total(parsed, name, **labels):
    return sum(v for (n, l), v in parsed.items() if n == name and all(dict(l).get(k) == w for k, w in labels.items()))


def test_metrics_count_calls_commits_agents_and_events(tmp_path):
    server = Ecsd(tmp_path / "data", extra_args=["--simulate-agents", "1", "--no-throttle"]).start()
    try:
        ecs = server.client()
        deadline = time.time() + 30
        while True:
            try:
                if ecs.list_container_instances(cluster="default")["containerInstanceArns"]:
                    break
            except ecs.exceptions.ClusterNotFoundException:
                pass  # the simulated agent has yet to create it
            assert time.time() < deadline, "the simulated agent registers"
            time.sleep(0.2)
        ecs.register_task_definition(
            family="job",
            containerDefinitions=[{"name": "c", "image": "busybox", "memory": 64,
                                   "dockerLabels": {"ecsd.simulate.run-seconds": "30"}}],
        )
        task = ecs.run_task(cluster="default", taskDefinition="job")["tasks"][0]["taskArn"]
        ecs.get_waiter("tasks_running").wait(cluster="default", tasks=[task], WaiterConfig=FAST)
        with pytest.raises(ecs.exceptions.ClusterNotFoundException):
            ecs.describe_container_instances(cluster="ghost", containerInstances=["x"])

        status, text = get(server.url)
        assert status == 200
        parsed = samples(text)
        assert total(parsed, "ecsd_requests_total", operation="RunTask", code="OK") == 1
        assert total(parsed, "ecsd_requests_total", operation="DescribeContainerInstances",
                     code="ClusterNotFoundException") == 1
        assert total(parsed, "ecsd_request_duration_seconds_count", operation="RunTask") == 1
        assert total(parsed, "ecsd_store_commit_duration_seconds_count") > 0
        assert total(parsed, "ecsd_store_commit_group_size_count") > 0
        assert total(parsed, "ecsd_agents_connected") == 1
        assert total(parsed, "ecsd_acs_messages_sent_total", kind="PayloadMessage") >= 1
        assert total(parsed, "ecsd_acs_messages_acknowledged_total") >= 1
        assert total(parsed, "ecsd_events_appended_total", detail_type="ECS Task State Change") >= 2
    finally:
        server.stop()


def test_throttled_calls_are_counted(tmp_path):
    server = Ecsd(tmp_path / "data", extra_args=["--throttle", "read=1/1"]).start()
    try:
        ecs = boto3.client("ecs", endpoint_url=server.url, region_name="us-east-1", aws_access_key_id="test",
                           aws_secret_access_key="test", config=Config(retries={"total_max_attempts": 1}))
        throttled = 0
        for _ in range(5):
            try:
                ecs.list_clusters()
            except ecs.exceptions.ClientError as error:
                assert error.response["Error"]["Code"] == "ThrottlingException"
                throttled += 1
        assert throttled > 0
        parsed = samples(get(server.url)[1])
        assert total(parsed, "ecsd_throttled_requests_total", family="read") == throttled
    finally:
        server.stop()


CREDENTIALS = """
[[principals]]
name = "watcher"
access_key_id = "AKIAWATCH"
secret_access_key = "watch-secret"
account_id = "123456789012"
permissions = ["operator"]

[[principals]]
name = "agent"
access_key_id = "AKIAAGENT"
secret_access_key = "agent-secret"
account_id = "123456789012"
permissions = ["agent"]
"""


def outside_address():
    """An address of this machine that is not loopback, if it has one."""
    found = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    return next((a for a in found if "." in a and not a.startswith("127.")), None)


def test_callers_off_loopback_must_sign_as_a_principal_allowed_to_read_metrics(tmp_path):
    address = outside_address()
    if address is None:
        pytest.skip("this machine has no address but loopback")
    credentials = tmp_path / "credentials.toml"
    credentials.write_text(CREDENTIALS)
    process = subprocess.Popen(
        [ecsd_binary(), "serve", "--listen", f"{address}:0", "--data-dir", str(tmp_path / "data"),
         "--credentials", str(credentials)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        url = process.stdout.readline().split(" on ", 1)[1].strip()

        def signed(key, secret):
            request = AWSRequest(method="GET", url=url + "/metrics")
            SigV4Auth(Credentials(key, secret), "ecs", "us-east-1").add_auth(request)
            return dict(request.headers.items())

        status, body = get(url)
        assert status == 403 and "MissingAuthenticationToken" in body
        status, body = get(url, headers=signed("AKIAAGENT", "agent-secret"))
        assert status == 400 and "AccessDeniedException" in body and "ecsd:ReadMetrics" in body
        status, body = get(url, headers=signed("AKIAWATCH", "watch-secret"))
        assert status == 200
        assert ("ecsd_requests_total", (("code", "OK"), ("operation", "-"))) not in samples(body)
    finally:
        process.terminate()
        process.wait(timeout=30)
