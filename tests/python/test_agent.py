"""The agent APIs with boto3: the sequences a real ECS agent produces, and random sequences of
valid and invalid reports that must never move a status backwards, never answer 5xx and always
leave the container instance's resources consistent."""

import random

import botocore.exceptions
import pytest

from test_lifecycle import register_instance, resource

ORDER = ["PROVISIONING", "PENDING", "ACTIVATING", "RUNNING", "DEACTIVATING", "STOPPING", "DEPROVISIONING", "STOPPED"]
CONTAINER_ORDER = ["PENDING", "RUNNING", "STOPPED"]


@pytest.fixture
def fleet(ecs):
    ecs.create_cluster(clusterName="fleet")
    instance = register_instance(ecs, "fleet")
    ecs.register_task_definition(
        family="web",
        containerDefinitions=[
            {"name": "app", "image": "nginx", "memory": 256, "cpu": 256, "portMappings": [{"containerPort": 80}]},
            {"name": "log", "image": "fluent-bit", "memory": 64, "essential": False},
        ],
    )
    return ecs, instance


def run(ecs):
    return ecs.run_task(cluster="fleet", taskDefinition="web")["tasks"][0]["taskArn"]


def describe(ecs, task):
    return ecs.describe_tasks(cluster="fleet", tasks=[task])["tasks"][0]


def container(task, name):
    return next(c for c in task["containers"] if c["name"] == name)


def test_agent_sequence_pending_running_stopped(fleet):
    ecs, _ = fleet
    task = run(ecs)
    ecs.submit_task_state_change(
        cluster="fleet",
        task=task,
        status="PENDING",
        pullStartedAt=1_800_000_000,
        pullStoppedAt=1_800_000_003.25,
        containers=[
            {"containerName": "app", "status": "PENDING", "imageDigest": "sha256:a", "networkBindings": []},
            {"containerName": "log", "status": "PENDING", "imageDigest": "sha256:l", "networkBindings": []},
        ],
    )
    ecs.submit_task_state_change(
        cluster="fleet",
        task=task,
        status="RUNNING",
        containers=[
            {
                "containerName": "app",
                "status": "RUNNING",
                "runtimeId": "r1",
                "networkBindings": [{"bindIP": "0.0.0.0", "containerPort": 80, "hostPort": 32768, "protocol": "tcp"}],
            },
            {"containerName": "log", "status": "RUNNING", "runtimeId": "r2", "networkBindings": []},
        ],
    )
    running = describe(ecs, task)
    assert (running["lastStatus"], running["version"]) == ("RUNNING", 3)
    assert running["pullStoppedAt"].timestamp() == 1_800_000_003.25
    assert container(running, "app")["networkBindings"][0]["hostPort"] == 32768
    assert running["connectivity"] == "CONNECTED"

    ecs.submit_task_state_change(
        cluster="fleet",
        task=task,
        status="STOPPED",
        executionStoppedAt=1_800_000_050,
        containers=[
            {"containerName": "app", "status": "STOPPED", "exitCode": 3, "networkBindings": []},
            {"containerName": "log", "status": "STOPPED", "exitCode": 0, "networkBindings": []},
        ],
    )
    stopped = describe(ecs, task)
    assert stopped["lastStatus"] == stopped["desiredStatus"] == "STOPPED"
    assert stopped["stopCode"] == "EssentialContainerExited"
    assert container(stopped, "app")["exitCode"] == 3
    assert stopped["executionStoppedAt"].timestamp() == 1_800_000_050
    ecs.get_waiter("tasks_stopped").wait(cluster="fleet", tasks=[task], WaiterConfig={"Delay": 1, "MaxAttempts": 2})
    ecs.submit_task_state_change(cluster="fleet", task=task, status="RUNNING")
    assert describe(ecs, task) == stopped


def test_container_and_attachment_apis(fleet):
    ecs, _ = fleet
    task = run(ecs)
    ecs.submit_container_state_change(cluster="fleet", task=task, containerName="app", status="RUNNING", runtimeId="x")
    assert describe(ecs, task)["lastStatus"] == "RUNNING"
    with pytest.raises(ecs.exceptions.InvalidParameterException):
        ecs.submit_container_state_change(cluster="fleet", task=task, containerName="nope", status="RUNNING")
    with pytest.raises(ecs.exceptions.InvalidParameterException):
        ecs.submit_attachment_state_changes(
            cluster="fleet", attachments=[{"attachmentArn": "arn:aws:ecs:us-east-1:1:attachment/x", "status": "ATTACHED"}]
        )
    with pytest.raises(ecs.exceptions.ClusterNotFoundException):
        ecs.submit_attachment_state_changes(
            cluster="ghost", attachments=[{"attachmentArn": "arn:aws:ecs:us-east-1:1:attachment/x", "status": "ATTACHED"}]
        )
    endpoints = ecs.discover_poll_endpoint(cluster="fleet")
    assert endpoints["endpoint"].endswith("/acs") and endpoints["telemetryEndpoint"].endswith("/tcs")


def random_report(rng, task):
    """A report an agent might send, or one a broken agent might: sometimes invalid."""
    body = {"cluster": "fleet", "task": task}
    if rng.random() < 0.8:
        body["status"] = rng.choice(["PENDING", "RUNNING", "STOPPED", "RUNNING", "BOGUS"])
    containers = []
    for name in rng.sample(["app", "log", "ghost"], rng.randint(0, 2)):
        change = {"containerName": name, "networkBindings": []}
        if rng.random() < 0.8:
            change["status"] = rng.choice(["PENDING", "RUNNING", "STOPPED", "DEAD"])
        if rng.random() < 0.3:
            change["exitCode"] = rng.choice([0, 1, 137])
        if rng.random() < 0.2:
            change["networkBindings"] = [{"containerPort": rng.choice([80, 0, 70000]), "hostPort": 32768}]
        if rng.random() < 0.1:
            change["runtimeId"] = "r" * rng.choice([10, 300])
        containers.append(change)
    if containers:
        body["containers"] = containers
    return body


def test_random_report_sequences_keep_every_invariant(fleet):
    ecs, instance = fleet
    rng = random.Random(5)
    tasks = [run(ecs) for _ in range(4)]
    seen = {t: describe(ecs, t) for t in tasks}
    for _ in range(250):
        task = rng.choice(tasks)
        try:
            if rng.random() < 0.1:
                ecs.stop_task(cluster="fleet", task=task)
            else:
                ecs.submit_task_state_change(**random_report(rng, task))
        except botocore.exceptions.ClientError as error:
            code = error.response["Error"]["Code"]
            assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 400, error
            assert code in ("InvalidParameterException", "SerializationException"), error
        now = describe(ecs, task)
        before = seen[task]
        assert ORDER.index(now["lastStatus"]) >= ORDER.index(before["lastStatus"])
        assert now["version"] >= before["version"]
        if now != before:
            assert now["version"] > before["version"] or now["desiredStatus"] != before["desiredStatus"]
        for c in now["containers"]:
            assert CONTAINER_ORDER.index(c["lastStatus"]) >= CONTAINER_ORDER.index(container(before, c["name"])["lastStatus"])
        if before["lastStatus"] == "STOPPED":
            assert now == before
        seen[task] = now
        holding = [t for t in tasks if seen[t]["lastStatus"] != "STOPPED"]
        described = ecs.describe_container_instances(cluster="fleet", containerInstances=[instance])["containerInstances"][0]
        assert resource(described, "CPU")["integerValue"] == 2048 - 256 * len(holding)
        assert resource(described, "MEMORY")["integerValue"] == 4096 - 320 * len(holding)
        running = sum(1 for t in holding if seen[t]["lastStatus"] == "RUNNING")
        assert described["runningTasksCount"] == running
        assert described["pendingTasksCount"] == len(holding) - running
