"""The first path through ecsd with boto3 and the AWS CLI, as a user would drive it."""

import signal

import pytest

AGENT_RESOURCES = [
    {"name": "CPU", "type": "INTEGER", "integerValue": 2048},
    {"name": "MEMORY", "type": "INTEGER", "integerValue": 4096},
    {"name": "PORTS", "type": "STRINGSET", "stringSetValue": ["22", "2375", "2376", "51678", "51679"]},
    {"name": "PORTS_UDP", "type": "STRINGSET", "stringSetValue": []},
]
AGENT_ATTRIBUTES = [
    {"name": "ecs.os-type", "value": "linux"},
    {"name": "ecs.os-family", "value": "LINUX"},
    {"name": "ecs.cpu-architecture", "value": "x86_64"},
    {"name": "ecs.capability.docker-remote-api.1.44"},
    {"name": "com.amazonaws.ecs.capability.logging-driver.json-file"},
]


def start_task(ecs):
    ecs.create_cluster(clusterName="demo")
    ecs.register_task_definition(
        family="web",
        containerDefinitions=[
            {
                "name": "app",
                "image": "nginx:1.27",
                "memory": 256,
                "cpu": 128,
                "portMappings": [{"containerPort": 80, "hostPort": 8080}],
                "environment": [{"name": "MODE", "value": "demo"}],
                "healthCheck": {"command": ["CMD", "true"], "interval": 10},
            }
        ],
    )
    instance = ecs.register_container_instance(
        cluster="demo", totalResources=AGENT_RESOURCES, attributes=AGENT_ATTRIBUTES
    )["containerInstance"]
    assert instance["attributes"] == AGENT_ATTRIBUTES
    run = ecs.run_task(cluster="demo", taskDefinition="web")
    assert run["failures"] == []
    return instance["containerInstanceArn"], run["tasks"][0]["taskArn"]


def report_running(ecs, task_arn):
    return ecs.submit_task_state_change(
        cluster="demo",
        task=task_arn,
        status="RUNNING",
        containers=[
            {
                "containerName": "app",
                "status": "RUNNING",
                "runtimeId": "0a1b2c",
                "networkBindings": [
                    {"bindIP": "0.0.0.0", "containerPort": 80, "hostPort": 8080, "protocol": "tcp"}
                ],
            }
        ],
    )


def describe(ecs, task_arn):
    return ecs.describe_tasks(cluster="demo", tasks=[task_arn])["tasks"][0]


def test_pending_to_running_through_the_agent_api(ecs):
    _, task_arn = start_task(ecs)
    task = describe(ecs, task_arn)
    assert (task["lastStatus"], task["desiredStatus"], task["version"]) == ("PENDING", "RUNNING", 1)

    answer = report_running(ecs, task_arn)
    assert "acknowledgment" in answer
    ecs.get_waiter("tasks_running").wait(cluster="demo", tasks=[task_arn], WaiterConfig={"Delay": 1, "MaxAttempts": 5})

    task = describe(ecs, task_arn)
    assert task["lastStatus"] == "RUNNING"
    assert task["version"] == 2
    assert task["startedAt"] >= task["createdAt"]
    container = task["containers"][0]
    assert container["runtimeId"] == "0a1b2c"
    assert container["networkBindings"] == [
        {"bindIP": "0.0.0.0", "containerPort": 80, "hostPort": 8080, "protocol": "tcp"}
    ]

    report_running(ecs, task_arn)
    assert describe(ecs, task_arn)["version"] == 2, "a repeated RUNNING changes nothing"

    definition = ecs.describe_task_definition(taskDefinition="web")["taskDefinition"]
    app = definition["containerDefinitions"][0]
    assert app["healthCheck"] == {"command": ["CMD", "true"], "interval": 10}
    assert app["environment"] == [{"name": "MODE", "value": "demo"}]


def test_errors_are_the_ones_ecs_returns(ecs):
    _, task_arn = start_task(ecs)
    with pytest.raises(ecs.exceptions.InvalidParameterException):
        ecs.submit_task_state_change(cluster="demo", task="0" * 32, status="RUNNING")
    with pytest.raises(ecs.exceptions.ClusterNotFoundException):
        ecs.submit_task_state_change(cluster="nowhere", task=task_arn, status="RUNNING")
    with pytest.raises(ecs.exceptions.ClusterNotFoundException):
        ecs.run_task(cluster="nowhere", taskDefinition="web")
    ecs.create_cluster(clusterName="bare")
    with pytest.raises(ecs.exceptions.InvalidParameterException, match="No Container Instances were found"):
        ecs.run_task(cluster="bare", taskDefinition="web")
    with pytest.raises(ecs.exceptions.ClientException):
        ecs.describe_task_definition(taskDefinition="missing")
    missing = ecs.describe_tasks(cluster="demo", tasks=["f" * 32])
    assert missing["failures"] == [
        {"arn": f"arn:aws:ecs:us-east-1:123456789012:task/demo/{'f' * 32}", "reason": "MISSING"}
    ]
    clusters = ecs.describe_clusters(clusters=["demo", "ghost"])
    assert [c["clusterName"] for c in clusters["clusters"]] == ["demo"]
    assert clusters["failures"][0]["reason"] == "MISSING"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_state_survives_a_restart(ecsd, sig):
    ecs = ecsd.client()
    instance_arn, task_arn = start_task(ecs)
    report_running(ecs, task_arn)
    before_task = describe(ecs, task_arn)
    before_instance = ecs.describe_container_instances(cluster="demo", containerInstances=[instance_arn])

    ecsd.stop(sig)
    ecsd.start()
    ecs = ecsd.client()

    assert describe(ecs, task_arn) == before_task
    after_instance = ecs.describe_container_instances(cluster="demo", containerInstances=[instance_arn])
    assert after_instance["containerInstances"] == before_instance["containerInstances"]
    assert ecs.list_clusters()["clusterArns"] == ["arn:aws:ecs:us-east-1:123456789012:cluster/demo"]


def test_the_aws_cli_session(aws_cli):
    cluster = aws_cli("create-cluster", "--cluster-name", "cli")["cluster"]
    assert cluster["status"] == "ACTIVE"
    registered = aws_cli(
        "register-task-definition",
        "--family",
        "hello",
        "--container-definitions",
        '[{"name":"hello","image":"busybox","memory":64,"command":["echo","hi"]}]',
    )
    assert registered["taskDefinition"]["revision"] == 1
    aws_cli(
        "register-container-instance",
        "--cluster",
        "cli",
        "--total-resources",
        "name=CPU,type=INTEGER,integerValue=1024",
        "name=MEMORY,type=INTEGER,integerValue=1024",
    )
    task = aws_cli("run-task", "--cluster", "cli", "--task-definition", "hello")["tasks"][0]
    described = aws_cli("describe-tasks", "--cluster", "cli", "--tasks", task["taskArn"])["tasks"][0]
    assert described["lastStatus"] == "PENDING"
    assert described["containers"][0]["name"] == "hello"
    assert aws_cli("list-clusters")["clusterArns"][0].endswith(":cluster/cli")
