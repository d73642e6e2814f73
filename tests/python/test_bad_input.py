"""Bad input against the real binary: every malformed request gets the right 4xx, never a 5xx or
a hang, and leaves what is stored exactly as it was."""

import json
import socket
import time

import pytest

from signing import send
from test_task_path import describe, report_running, start_task

SUBMIT_MEMBERS = {
    "cluster": "string",
    "task": "string",
    "status": "string",
    "reason": "string",
    "containers": "list",
    "attachments": "list",
    "managedAgents": "list",
    "pullStartedAt": "timestamp",
    "pullStoppedAt": "timestamp",
    "executionStoppedAt": "timestamp",
}
CONTAINER_MEMBERS = {
    "containerName": "string",
    "imageDigest": "string",
    "runtimeId": "string",
    "exitCode": "integer",
    "networkBindings": "list",
    "reason": "string",
    "status": "string",
}
WRONG = {
    "string": [1, True, [], {}],
    "list": ["x", 1, {}],
    "timestamp": ["2024-01-01T00:00:00Z", [], True],
    "integer": ["1", 1.5, [], 2**40],
}


@pytest.fixture
def running_task(ecsd):
    ecs = ecsd.client()
    instance_arn, task_arn = start_task(ecs)
    report_running(ecs, task_arn)
    return ecs, task_arn, instance_arn


def snapshot(ecs, task_arn, instance_arn):
    return (
        describe(ecs, task_arn),
        ecs.describe_container_instances(cluster="demo", containerInstances=[instance_arn])["containerInstances"],
        ecs.list_clusters()["clusterArns"],
    )


def assert_refused(ecsd, operation, body, code, status=400, content_type="application/x-amz-json-1.1"):
    got_status, headers, answer = send(ecsd.url, operation, body, content_type=content_type)
    assert got_status == status, (body[:200] if isinstance(body, (str, bytes)) else body, got_status, answer)
    assert answer["__type"] == code, answer
    assert answer["message"]
    assert headers["x-amzn-errortype"] == code
    assert headers["x-amzn-requestid"]
    return answer


def test_wrong_types_for_every_member_of_submit_task_state_change(ecsd, running_task):
    ecs, task_arn, instance_arn = running_task
    before = snapshot(ecs, task_arn, instance_arn)
    base = {"cluster": "demo", "task": task_arn, "status": "STOPPED"}
    for member, kind in SUBMIT_MEMBERS.items():
        for wrong in WRONG[kind]:
            answer = assert_refused(ecsd, "SubmitTaskStateChange", json.dumps({**base, member: wrong}), "SerializationException")
            assert member in answer["message"], answer
    for member, kind in CONTAINER_MEMBERS.items():
        for wrong in WRONG[kind]:
            container = {"containerName": "app", "status": "STOPPED", member: wrong}
            answer = assert_refused(
                ecsd, "SubmitTaskStateChange", json.dumps({**base, "containers": [container]}), "SerializationException"
            )
            assert f"containers[0].{member}" in answer["message"], answer
    binding = {"containerPort": "80"}
    container = {"containerName": "app", "networkBindings": [binding]}
    assert_refused(ecsd, "SubmitTaskStateChange", json.dumps({**base, "containers": [container]}), "SerializationException")
    assert snapshot(ecs, task_arn, instance_arn) == before


def test_invalid_values_are_invalid_parameters_naming_the_member(ecsd, running_task):
    ecs, task_arn, instance_arn = running_task
    before = snapshot(ecs, task_arn, instance_arn)
    base = {"cluster": "demo", "task": task_arn}
    cases = [
        ({"status": "EXPLODED"}, "status"),
        ({"status": "STOPPED", "reason": "r" * 1025}, "reason"),
        ({"status": "STOPPED", "containers": [{"containerName": "ghost"}]}, "containerName"),
        ({"status": "STOPPED", "containers": [{"containerName": "app", "runtimeId": "x" * 256}]}, "runtimeId"),
        ({"status": "STOPPED", "containers": [{"containerName": "app", "imageDigest": "x" * 256}]}, "imageDigest"),
        ({"status": "STOPPED", "containers": [{"containerName": "app", "reason": "x" * 1025}]}, "reason"),
        (
            {"status": "STOPPED", "containers": [{"containerName": "app", "networkBindings": [{"containerPort": 70000}]}]},
            "networkBindings",
        ),
        (
            {"status": "STOPPED", "containers": [{"containerName": "app", "networkBindings": [{"protocol": "sctp"}]}]},
            "protocol",
        ),
        ({"status": "STOPPED", "attachments": [{"attachmentArn": "arn:x"}]}, "status"),
        ({"task": "f" * 32, "status": "STOPPED"}, "task"),
    ]
    for extra, member in cases:
        answer = assert_refused(ecsd, "SubmitTaskStateChange", json.dumps({**base, **extra}), "InvalidParameterException")
        assert member in answer["message"], (extra, answer)
    assert snapshot(ecs, task_arn, instance_arn) == before


def test_malformed_bodies(ecsd, running_task):
    ecs, task_arn, instance_arn = running_task
    before = snapshot(ecs, task_arn, instance_arn)
    valid = json.dumps({"cluster": "demo", "task": task_arn, "status": "STOPPED"})
    for cut in (1, len(valid) // 2, len(valid) - 1):
        assert_refused(ecsd, "SubmitTaskStateChange", valid[:cut], "SerializationException")
    assert_refused(ecsd, "SubmitTaskStateChange", b'{"cluster": "\xff\xfe"}', "SerializationException")
    assert_refused(ecsd, "SubmitTaskStateChange", "[" * 10000 + "]" * 10000, "SerializationException")
    deep = '{"containers": [' + '{"containerName": ' * 5000 + '"x"' + "}" * 5000 + "]}"
    assert_refused(ecsd, "SubmitTaskStateChange", deep, "SerializationException")
    assert_refused(ecsd, "SubmitTaskStateChange", "null", "SerializationException")
    assert_refused(ecsd, "SubmitTaskStateChange", valid, "SerializationException", content_type="text/plain")
    assert_refused(ecsd, "CreateCluster", json.dumps({"clusterName": "n" * 500_000}), "InvalidParameterException")
    assert_refused(ecsd, "SubmitTaskStateChange", "x" * (10 * 1024 * 1024), "RequestEntityTooLargeException", status=413)
    assert_refused(ecsd, None, valid, "UnknownOperationException")
    assert_refused(ecsd, "NoSuchThing", valid, "UnknownOperationException")
    assert snapshot(ecs, task_arn, instance_arn) == before


def test_unknown_members_are_ignored(ecsd, running_task):
    ecs, task_arn, _ = running_task
    status, _, answer = send(
        ecsd.url,
        "SubmitTaskStateChange",
        json.dumps({"cluster": "demo", "task": task_arn, "status": "RUNNING", "zoneId": "use1-az1", "extra": {"a": 1}}),
    )
    assert status == 200, answer
    status, _, answer = send(
        ecsd.url, "DescribeTasks", json.dumps({"cluster": "demo", "tasks": [task_arn], "futureMember": [1, 2]})
    )
    assert status == 200 and answer["tasks"][0]["taskArn"] == task_arn


def test_unsigned_requests_change_nothing(ecsd, running_task):
    ecs, task_arn, instance_arn = running_task
    before = snapshot(ecs, task_arn, instance_arn)
    status, _, answer = send(
        ecsd.url, "SubmitTaskStateChange", json.dumps({"cluster": "demo", "task": task_arn, "status": "STOPPED"}), sign=False
    )
    assert (status, answer["__type"]) == (403, "MissingAuthenticationTokenException")
    assert snapshot(ecs, task_arn, instance_arn) == before


def test_slow_clients_are_disconnected(tmp_path):
    from conftest import Ecsd

    server = Ecsd(tmp_path / "data", extra_args=["--header-timeout-secs", "1", "--body-timeout-secs", "1"]).start()
    try:
        host, port = server.url.removeprefix("http://").split(":")
        for payload in (b"", b"POST / HTTP/1.1\r\nHost: x\r\n"):
            conn = socket.create_connection((host, int(port)))
            conn.settimeout(10)
            started = time.monotonic()
            assert conn.recv(100) == b""
            assert time.monotonic() - started < 5
        conn = socket.create_connection((host, int(port)))
        conn.settimeout(10)
        conn.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        answer = conn.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
        # The server still answers others.
        status, _, _ = send(server.url, "ListClusters", "{}")
        assert status == 200
    finally:
        server.stop()


def test_negative_quantities_are_refused_and_nothing_overcommits(ecs):
    ecs.create_cluster(clusterName="small")
    instance = ecs.register_container_instance(cluster="small", totalResources=[
        {"name": "CPU", "type": "INTEGER", "integerValue": 1024},
        {"name": "MEMORY", "type": "INTEGER", "integerValue": 1000}])["containerInstance"]["containerInstanceArn"]
    for container, member in (
        ({"memory": -500}, "memory"),
        ({"memory": 64, "cpu": -5}, "cpu"),
        ({"memory": 64, "memoryReservation": -1}, "memoryReservation"),
        ({"memory": 64, "ulimits": [{"name": "nofile", "softLimit": -1, "hardLimit": 10}]}, "softLimit"),
        ({"memory": 64, "healthCheck": {"command": ["CMD", "true"], "retries": 0}}, "retries"),
    ):
        with pytest.raises(ecs.exceptions.ClientException) as refused:
            ecs.register_task_definition(family="neg", containerDefinitions=[{"name": "c", "image": "i", **container}])
        assert member in refused.value.response["Error"]["Message"], (container, refused.value)
    with pytest.raises(ecs.exceptions.ClientException) as refused:
        ecs.register_task_definition(family="neg", cpu="-2048", containerDefinitions=[{"name": "c", "image": "i", "memory": 64}])
    assert "'cpu'" in refused.value.response["Error"]["Message"]
    assert ecs.list_task_definitions(familyPrefix="neg")["taskDefinitionArns"] == []
    with pytest.raises(ecs.exceptions.InvalidParameterException):
        ecs.register_container_instance(cluster="small", totalResources=[
            {"name": "MEMORY", "type": "INTEGER", "integerValue": -1}])

    ecs.register_task_definition(family="big", containerDefinitions=[{"name": "c", "image": "i", "memory": 900}])
    with pytest.raises(ecs.exceptions.ClientException):
        ecs.run_task(cluster="small", taskDefinition="big",
                     overrides={"containerOverrides": [{"name": "c", "memory": -500}]})
    assert len(ecs.run_task(cluster="small", taskDefinition="big")["tasks"]) == 1
    second = ecs.run_task(cluster="small", taskDefinition="big")
    assert second["tasks"] == [] and second["failures"][0]["reason"] == "RESOURCE:MEMORY"
    described = ecs.describe_container_instances(cluster="small", containerInstances=[instance])["containerInstances"][0]
    memory = next(r for r in described["remainingResources"] if r["name"] == "MEMORY")
    assert memory["integerValue"] == 100


def test_control_characters_are_refused_everywhere(ecsd, ecs):
    arn = ecs.create_cluster(clusterName="clean", tags=[{"key": "k", "value": "v"}])["cluster"]["clusterArn"]
    for tags in ([{"key": "nul\u0000", "value": "v"}], [{"key": "k", "value": "bell\u0007"}], [{"key": "a;b", "value": "v"}]):
        answer = assert_refused(ecsd, "TagResource", json.dumps({"resourceArn": arn, "tags": tags}), "InvalidParameterException")
        assert "tags[0]" in answer["message"], answer
    assert_refused(ecsd, "CreateCluster", json.dumps({"clusterName": "x", "tags": [{"key": "k", "value": "\u0000"}]}),
                   "InvalidParameterException")
    answer = assert_refused(ecsd, "StopTask", json.dumps({"task": "t", "reason": "why\u0000"}), "InvalidParameterException")
    assert "reason" in answer["message"]
    assert ecs.list_tags_for_resource(resourceArn=arn)["tags"] == [{"key": "k", "value": "v"}]
    assert ecs.list_clusters()["clusterArns"] == [arn]
