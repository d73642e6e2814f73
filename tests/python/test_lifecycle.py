"""The task lifecycle API as boto3 programs written against real ECS use it: every operation's
success path and errors, paginators, waiters, and placement that never overcommits."""

import random

import pytest

from test_task_path import AGENT_ATTRIBUTES, AGENT_RESOURCES

ACCOUNT = "123456789012"


def arn(kind, rest):
    return f"arn:aws:ecs:us-east-1:{ACCOUNT}:{kind}/{rest}"


def register_instance(ecs, cluster, cpu=2048, memory=4096, attributes=()):
    resources = [
        {"name": "CPU", "type": "INTEGER", "integerValue": cpu},
        {"name": "MEMORY", "type": "INTEGER", "integerValue": memory},
        *AGENT_RESOURCES[2:],
    ]
    return ecs.register_container_instance(
        cluster=cluster, totalResources=resources, attributes=[*AGENT_ATTRIBUTES, *attributes]
    )["containerInstance"]["containerInstanceArn"]


def register(ecs, family, memory=256, cpu=128, host_port=None, **extra):
    container = {"name": "app", "image": "busybox", "memory": memory, "cpu": cpu}
    if host_port:
        container["portMappings"] = [{"containerPort": 80, "hostPort": host_port}]
    return ecs.register_task_definition(family=family, containerDefinitions=[container], **extra)["taskDefinition"]


def report(ecs, cluster, task_arn, status, **containers):
    ecs.submit_task_state_change(
        cluster=cluster,
        task=task_arn,
        status=status,
        containers=[{"containerName": name, "status": status, **fields} for name, fields in containers.items()],
    )


def resource(instance, name):
    return next(r for r in instance["remainingResources"] if r["name"] == name)


# Clusters


def test_cluster_lifecycle(ecs):
    created = ecs.create_cluster(
        clusterName="life",
        tags=[{"key": "team", "value": "core"}],
        settings=[{"name": "containerInsights", "value": "enabled"}],
        configuration={"executeCommandConfiguration": {"logging": "DEFAULT"}},
    )["cluster"]
    assert created["clusterArn"] == arn("cluster", "life")
    assert created["configuration"] == {"executeCommandConfiguration": {"logging": "DEFAULT"}}

    updated = ecs.update_cluster(cluster="life", settings=[{"name": "containerInsights", "value": "disabled"}])
    assert updated["cluster"]["settings"] == [{"name": "containerInsights", "value": "disabled"}]
    described = ecs.describe_clusters(clusters=["life"], include=["SETTINGS", "TAGS", "STATISTICS", "CONFIGURATIONS"])
    cluster = described["clusters"][0]
    assert cluster["settings"][0]["value"] == "disabled"
    assert cluster["tags"] == [{"key": "team", "value": "core"}]
    stats = {s["name"]: s["value"] for s in cluster["statistics"]}
    assert stats["runningEC2TasksCount"] == "0" and "pendingEC2TasksCount" in stats

    instance = register_instance(ecs, "life")
    with pytest.raises(ecs.exceptions.ClusterContainsContainerInstancesException):
        ecs.delete_cluster(cluster="life")
    register(ecs, "life-td")
    task = ecs.run_task(cluster="life", taskDefinition="life-td")["tasks"][0]["taskArn"]
    ecs.deregister_container_instance(cluster="life", containerInstance=instance, force=True)
    with pytest.raises(ecs.exceptions.ClusterContainsTasksException):
        ecs.delete_cluster(cluster="life")
    report(ecs, "life", task, "STOPPED", app={"exitCode": 0})

    deleted = ecs.delete_cluster(cluster=arn("cluster", "life"))["cluster"]
    assert deleted["status"] == "INACTIVE"
    assert ecs.describe_clusters(clusters=["life"])["clusters"][0]["status"] == "INACTIVE"
    assert arn("cluster", "life") not in ecs.list_clusters()["clusterArns"]
    with pytest.raises(ecs.exceptions.ClusterNotFoundException):
        ecs.run_task(cluster="life", taskDefinition="life-td")
    with pytest.raises(ecs.exceptions.ClusterNotFoundException):
        ecs.update_cluster(cluster="life", settings=[])
    with pytest.raises(ecs.exceptions.ClusterNotFoundException):
        ecs.delete_cluster(cluster="life")
    assert ecs.create_cluster(clusterName="life")["cluster"]["status"] == "ACTIVE"
    with pytest.raises(ecs.exceptions.InvalidParameterException):
        ecs.create_cluster(clusterName="bad name!")
    with pytest.raises(ecs.exceptions.InvalidParameterException):
        ecs.create_cluster(clusterName="t", tags=[{"key": "aws:reserved", "value": "x"}])


# Task definitions


def test_task_definition_lifecycle(ecs):
    for family in ("alpha", "alpha", "beta", "gamma"):
        register(ecs, family, tags=[{"key": "f", "value": family}])
    listed = ecs.list_task_definitions()["taskDefinitionArns"]
    assert listed == [arn("task-definition", n) for n in ("alpha:1", "alpha:2", "beta:1", "gamma:1")]
    desc = ecs.list_task_definitions(familyPrefix="al", sort="DESC")["taskDefinitionArns"]
    assert desc == [arn("task-definition", "alpha:2"), arn("task-definition", "alpha:1")]
    assert ecs.list_task_definition_families(familyPrefix="b")["families"] == ["beta"]

    tagged = ecs.describe_task_definition(taskDefinition="beta", include=["TAGS"])
    assert tagged["tags"] == [{"key": "f", "value": "beta"}]
    assert "tags" not in ecs.describe_task_definition(taskDefinition="beta")

    gone = ecs.deregister_task_definition(taskDefinition="gamma:1")["taskDefinition"]
    assert gone["status"] == "INACTIVE" and "deregisteredAt" in gone
    # Without a status both kinds are listed: ACTIVE (an ACTIVE revision) and INACTIVE (none).
    assert ecs.list_task_definition_families()["families"] == ["alpha", "beta", "gamma"]
    assert ecs.list_task_definition_families(status="ACTIVE")["families"] == ["alpha", "beta"]
    assert ecs.list_task_definition_families(status="ALL")["families"] == ["alpha", "beta", "gamma"]
    assert ecs.list_task_definition_families(status="INACTIVE")["families"] == ["gamma"]
    assert ecs.list_task_definitions(status="INACTIVE")["taskDefinitionArns"] == [arn("task-definition", "gamma:1")]
    with pytest.raises(ecs.exceptions.ClientException):
        ecs.describe_task_definition(taskDefinition="gamma")
    assert ecs.describe_task_definition(taskDefinition="gamma:1")["taskDefinition"]["status"] == "INACTIVE"
    with pytest.raises(ecs.exceptions.ClientException):
        ecs.deregister_task_definition(taskDefinition="alpha")
    with pytest.raises(ecs.exceptions.ClientException):
        ecs.deregister_task_definition(taskDefinition="nope:1")

    deleted = ecs.delete_task_definitions(taskDefinitions=["gamma:1", "alpha:1", "nope:3"])
    assert [d["status"] for d in deleted["taskDefinitions"]] == ["DELETE_IN_PROGRESS"]
    assert {f["arn"] for f in deleted["failures"]} == {"alpha:1", "nope:3"}

    for bad in (
        [{"name": "a", "image": "i", "memory": 8}, {"name": "a", "image": "i", "memory": 8}],
        [{"name": f"c{i}", "image": "i", "memory": 8} for i in range(11)],
        [{"name": "a", "image": "i"}],
        [{"name": "a", "memory": 8}],
        [{"name": "a", "image": "i", "memory": 8, "portMappings": [{"containerPort": 70000}]}],
        [{"name": "a", "image": "i", "memory": 8, "essential": False}],
    ):
        with pytest.raises(ecs.exceptions.ClientException):
            ecs.register_task_definition(family="bad", containerDefinitions=bad)
    with pytest.raises(ecs.exceptions.ClientException):
        ecs.register_task_definition(
            family="huge", containerDefinitions=[{"name": "a", "image": "i", "memory": 8, "command": ["x" * 70000]}]
        )
    # Task-level memory is enough.
    sized = ecs.register_task_definition(family="sized", memory="512", containerDefinitions=[{"name": "a", "image": "i"}])
    assert sized["taskDefinition"]["memory"] == "512"


# Container instances


def test_container_instance_lifecycle(ecs):
    ecs.create_cluster(clusterName="ci")
    first = register_instance(ecs, "ci", attributes=[{"name": "rack", "value": "r1"}])
    second = register_instance(ecs, "ci", attributes=[{"name": "rack", "value": "r2"}])
    filtered = ecs.list_container_instances(cluster="ci", filter="attribute:rack == r2")
    assert filtered["containerInstanceArns"] == [second]
    with pytest.raises(ecs.exceptions.InvalidParameterException):
        ecs.list_container_instances(cluster="ci", filter="attribute:rack ~~ r2")

    drained = ecs.update_container_instances_state(cluster="ci", containerInstances=[first, "ghost"], status="DRAINING")
    assert drained["containerInstances"][0]["status"] == "DRAINING"
    assert drained["failures"][0]["reason"] == "MISSING"
    assert ecs.list_container_instances(cluster="ci", status="DRAINING")["containerInstanceArns"] == [first]
    with pytest.raises(ecs.exceptions.InvalidParameterException):
        ecs.update_container_instances_state(cluster="ci", containerInstances=[first], status="REGISTERING")

    register(ecs, "ci-td")
    tasks = ecs.run_task(cluster="ci", taskDefinition="ci-td", count=3)["tasks"]
    assert {t["containerInstanceArn"] for t in tasks} == {second}, "no placement on a DRAINING instance"

    with pytest.raises(ecs.exceptions.InvalidParameterException):
        ecs.deregister_container_instance(cluster="ci", containerInstance=second)
    gone = ecs.deregister_container_instance(cluster="ci", containerInstance=second, force=True)["containerInstance"]
    assert gone["status"] == "INACTIVE"
    with pytest.raises(ecs.exceptions.InvalidParameterException):
        ecs.deregister_container_instance(cluster="ci", containerInstance="0" * 32)
    counts = ecs.describe_clusters(clusters=["ci"])["clusters"][0]
    assert counts["registeredContainerInstancesCount"] == 1


def test_attributes(ecs):
    ecs.create_cluster(clusterName="attrs")
    instance = register_instance(ecs, "attrs")
    put = ecs.put_attributes(
        cluster="attrs",
        attributes=[{"name": "stack", "value": "blue", "targetType": "container-instance", "targetId": instance}],
    )
    assert put["attributes"][0]["name"] == "stack"
    listed = ecs.list_attributes(cluster="attrs", targetType="container-instance", attributeName="stack")
    assert listed["attributes"] == [
        {"name": "stack", "value": "blue", "targetType": "container-instance", "targetId": instance}
    ]
    described = ecs.describe_container_instances(cluster="attrs", containerInstances=[instance])
    assert {"name": "stack", "value": "blue"} in described["containerInstances"][0]["attributes"]
    with pytest.raises(ecs.exceptions.TargetNotFoundException):
        ecs.put_attributes(cluster="attrs", attributes=[{"name": "x", "value": "y", "targetId": "f" * 32}])
    with pytest.raises(ecs.exceptions.AttributeLimitExceededException):
        for i in range(11):
            ecs.put_attributes(cluster="attrs", attributes=[{"name": f"extra{i}", "value": "v", "targetId": instance}])
    ecs.delete_attributes(cluster="attrs", attributes=[{"name": "stack", "targetId": instance}])
    after = ecs.list_attributes(cluster="attrs", targetType="container-instance", attributeName="stack")
    assert after["attributes"] == []


# Tasks


def test_run_task_options_and_idempotency(ecs):
    ecs.create_cluster(clusterName="run")
    instance = register_instance(ecs, "run")
    register(ecs, "runner", tags=[{"key": "from", "value": "td"}])
    params = dict(
        cluster="run",
        taskDefinition="runner",
        count=2,
        startedBy="ci-job",
        group="batch",
        tags=[{"key": "run", "value": "1"}],
        propagateTags="TASK_DEFINITION",
        overrides={"containerOverrides": [{"name": "app", "command": ["echo", "hi"], "memory": 300}]},
    )
    first = ecs.run_task(**params, clientToken="token-1")
    assert len(first["tasks"]) == 2
    task = first["tasks"][0]
    assert task["group"] == "batch" and task["startedBy"] == "ci-job"
    assert task["overrides"]["containerOverrides"][0]["command"] == ["echo", "hi"]
    assert task["containers"][0]["memory"] == "300"
    assert {"key": "from", "value": "td"} in task["tags"] and {"key": "run", "value": "1"} in task["tags"]
    again = ecs.run_task(**params, clientToken="token-1")
    assert [t["taskArn"] for t in again["tasks"]] == [t["taskArn"] for t in first["tasks"]]
    # The token with other parameters is a conflict naming the tasks the token made.
    with pytest.raises(ecs.exceptions.ConflictException) as conflict:
        ecs.run_task(cluster="run", taskDefinition="runner", count=2, clientToken="token-1")
    assert sorted(conflict.value.response["resourceIds"]) == sorted(t["taskArn"] for t in first["tasks"])
    described = ecs.describe_container_instances(cluster="run", containerInstances=[instance])["containerInstances"][0]
    assert described["pendingTasksCount"] == 2
    assert resource(described, "MEMORY")["integerValue"] == 4096 - 600

    with pytest.raises(ecs.exceptions.InvalidParameterException):
        ecs.run_task(cluster="run", taskDefinition="runner", placementStrategy=[{"type": "binpack", "field": "disk"}])
    with pytest.raises(ecs.exceptions.InvalidParameterException):
        ecs.run_task(cluster="run", taskDefinition="runner", placementConstraints=[{"type": "memberOf"}])
    with pytest.raises(ecs.exceptions.InvalidParameterException):
        ecs.run_task(cluster="run", taskDefinition="runner", launchType="FARGATE")
    ecs.deregister_task_definition(taskDefinition="runner:1")
    with pytest.raises(ecs.exceptions.ClientException):
        ecs.run_task(cluster="run", taskDefinition="runner:1")


def test_placement_strategies_and_constraints(ecs):
    ecs.create_cluster(clusterName="place")
    zone_a = register_instance(ecs, "place", attributes=[{"name": "ecs.availability-zone", "value": "us-east-1a"}])
    zone_b = register_instance(ecs, "place", attributes=[{"name": "ecs.availability-zone", "value": "us-east-1b"}])
    register(ecs, "small", memory=512)
    packed = ecs.run_task(
        cluster="place", taskDefinition="small", count=4, placementStrategy=[{"type": "binpack", "field": "memory"}]
    )["tasks"]
    assert len({t["containerInstanceArn"] for t in packed}) == 1
    spread = ecs.run_task(
        cluster="place",
        taskDefinition="small",
        count=4,
        placementStrategy=[{"type": "spread", "field": "attribute:ecs.availability-zone"}],
    )["tasks"]
    packed_on = {t["containerInstanceArn"] for t in packed}
    assert {t["containerInstanceArn"] for t in spread} == {zone_a, zone_b} - packed_on, "the emptier zone evens out"
    only_b = ecs.run_task(
        cluster="place",
        taskDefinition="small",
        count=2,
        placementConstraints=[{"type": "memberOf", "expression": "attribute:ecs.availability-zone == us-east-1b"}],
    )["tasks"]
    assert {t["containerInstanceArn"] for t in only_b} == {zone_b}
    assert all(t.get("availabilityZone") == "us-east-1b" for t in only_b)
    distinct = ecs.run_task(
        cluster="place", taskDefinition="small", count=3, placementConstraints=[{"type": "distinctInstance"}]
    )
    assert len(distinct["tasks"]) == 2
    assert distinct["failures"][0]["reason"] == "DistinctInstance placement constraint unsatisfied."
    nowhere = ecs.run_task(
        cluster="place",
        taskDefinition="small",
        placementConstraints=[{"type": "memberOf", "expression": "attribute:ecs.availability-zone == mars-1a"}],
    )
    assert nowhere["tasks"] == []
    assert {f["reason"] for f in nowhere["failures"]} == {"MemberOf placement constraint unsatisfied."}
    assert zone_a in {f["arn"] for f in nowhere["failures"]}


def test_host_ports_are_accounted(ecs):
    ecs.create_cluster(clusterName="ports")
    instance = register_instance(ecs, "ports")
    register(ecs, "web", host_port=8080)
    assert len(ecs.run_task(cluster="ports", taskDefinition="web")["tasks"]) == 1
    second = ecs.run_task(cluster="ports", taskDefinition="web")
    assert second["tasks"] == [] and second["failures"][0]["reason"] == "RESOURCE:PORTS"
    ports = resource(ecs.describe_container_instances(cluster="ports", containerInstances=[instance])["containerInstances"][0], "PORTS")
    assert "8080" in ports["stringSetValue"]
    register(ecs, "ssh", host_port=22)
    assert ecs.run_task(cluster="ports", taskDefinition="ssh")["failures"][0]["reason"] == "RESOURCE:PORTS"


def test_start_stop_and_list_tasks(ecs):
    ecs.create_cluster(clusterName="ops")
    one = register_instance(ecs, "ops")
    two = register_instance(ecs, "ops", cpu=128)
    register(ecs, "svc", cpu=256)
    started = ecs.start_task(cluster="ops", taskDefinition="svc", containerInstances=[one, two, "f" * 32], startedBy="me")
    assert len(started["tasks"]) == 1 and started["tasks"][0]["containerInstanceArn"] == one
    assert sorted(f["reason"] for f in started["failures"]) == ["MISSING", "RESOURCE:CPU"]
    task_arn = started["tasks"][0]["taskArn"]
    other = ecs.run_task(cluster="ops", taskDefinition="svc")["tasks"][0]["taskArn"]

    assert sorted(ecs.list_tasks(cluster="ops")["taskArns"]) == sorted([task_arn, other])
    assert ecs.list_tasks(cluster="ops", startedBy="me")["taskArns"] == [task_arn]
    assert ecs.list_tasks(cluster="ops", family="nope")["taskArns"] == []
    assert len(ecs.list_tasks(cluster="ops", containerInstance=one)["taskArns"]) == 2
    assert ecs.list_tasks(cluster="ops", launchType="EXTERNAL")["taskArns"] == []
    assert ecs.list_tasks(cluster="ops", serviceName="svc")["taskArns"] == []
    assert ecs.list_tasks(cluster="ops", desiredStatus="PENDING")["taskArns"] == []

    stopped = ecs.stop_task(cluster="ops", task=task_arn, reason="done here")["task"]
    assert stopped["desiredStatus"] == "STOPPED" and stopped["stopCode"] == "UserInitiated"
    assert stopped["stoppedReason"] == "done here" and "stoppingAt" in stopped
    assert stopped["version"] == 2
    assert ecs.list_tasks(cluster="ops")["taskArns"] == [other]
    assert ecs.list_tasks(cluster="ops", desiredStatus="STOPPED")["taskArns"] == [task_arn]
    report(ecs, "ops", task_arn, "STOPPED", app={"exitCode": 137})
    final = ecs.describe_tasks(cluster="ops", tasks=[task_arn])["tasks"][0]
    assert final["lastStatus"] == "STOPPED"
    assert final["stopCode"] == "UserInitiated" and final["stoppedReason"] == "done here"
    with pytest.raises(ecs.exceptions.InvalidParameterException):
        ecs.stop_task(cluster="ops", task="0" * 32)
    with pytest.raises(ecs.exceptions.InvalidParameterException):
        ecs.start_task(cluster="ops", taskDefinition="svc", containerInstances=[])


def test_tags_on_every_resource(ecs):
    ecs.create_cluster(clusterName="tagged")
    instance = register_instance(ecs, "tagged")
    definition = register(ecs, "tagged-td")["taskDefinitionArn"]
    task = ecs.run_task(cluster="tagged", taskDefinition="tagged-td")["tasks"][0]["taskArn"]
    for resource_arn in (arn("cluster", "tagged"), definition, instance, task):
        ecs.tag_resource(resourceArn=resource_arn, tags=[{"key": "a", "value": "1"}, {"key": "b", "value": "2"}])
        ecs.tag_resource(resourceArn=resource_arn, tags=[{"key": "a", "value": "3"}])
        ecs.untag_resource(resourceArn=resource_arn, tagKeys=["b"])
        assert ecs.list_tags_for_resource(resourceArn=resource_arn)["tags"] == [{"key": "a", "value": "3"}]
    assert ecs.describe_tasks(cluster="tagged", tasks=[task], include=["TAGS"])["tasks"][0]["tags"] == [
        {"key": "a", "value": "3"}
    ]
    untagged = ecs.describe_tasks(cluster="tagged", tasks=[task])["tasks"][0]
    assert untagged["version"] == 1, "tags are not state"
    assert untagged.get("tags", []) == [], "tags are shown only when asked for"
    with pytest.raises(ecs.exceptions.ResourceNotFoundException):
        ecs.list_tags_for_resource(resourceArn=arn("task", "tagged/" + "0" * 32))
    with pytest.raises(ecs.exceptions.InvalidParameterException):
        ecs.tag_resource(resourceArn=definition, tags=[{"key": "aws:x", "value": "1"}])
    with pytest.raises(ecs.exceptions.InvalidParameterException):
        ecs.tag_resource(resourceArn=definition, tags=[{"key": f"k{i}", "value": "v"} for i in range(50)])


# Clients that must work unchanged


def test_paginators(ecs):
    ecs.create_cluster(clusterName="pages")
    for i in range(7):
        ecs.create_cluster(clusterName=f"pages-{i}")
        register(ecs, f"fam-{i}")
        register(ecs, "fam-0")
    instances = [register_instance(ecs, "pages", attributes=[{"name": "n", "value": str(i)}]) for i in range(5)]
    register(ecs, "tiny", memory=8, cpu=1)
    for _ in range(3):
        ecs.run_task(cluster="pages", taskDefinition="tiny", count=4)

    def collect(operation, key, **kwargs):
        pages = list(ecs.get_paginator(operation).paginate(PaginationConfig={"PageSize": 2}, **kwargs))
        items = [item for page in pages for item in page[key]]
        assert len(pages) >= len(items) // 2
        return items

    assert len(collect("list_clusters", "clusterArns")) == 8
    assert len(collect("list_task_definitions", "taskDefinitionArns")) == 15
    assert len(collect("list_task_definitions", "taskDefinitionArns", sort="DESC")) == 15
    assert len(collect("list_task_definition_families", "families")) == 8
    assert sorted(collect("list_container_instances", "containerInstanceArns", cluster="pages")) == sorted(instances)
    assert len(collect("list_tasks", "taskArns", cluster="pages")) == 12
    attributes = collect("list_attributes", "attributes", cluster="pages", targetType="container-instance")
    assert len([a for a in attributes if a["name"] == "n"]) == 5
    with pytest.raises(ecs.exceptions.InvalidParameterException):
        ecs.list_tasks(cluster="pages", nextToken="bm90IGEgdG9rZW4")
    with pytest.raises(ecs.exceptions.InvalidParameterException):
        ecs.list_tasks(cluster="pages", maxResults=101)


def test_waiters_follow_agent_reports(ecs):
    ecs.create_cluster(clusterName="wait")
    register_instance(ecs, "wait")
    register(ecs, "job")
    tasks = [t["taskArn"] for t in ecs.run_task(cluster="wait", taskDefinition="job", count=2)["tasks"]]
    for task in tasks:
        report(ecs, "wait", task, "RUNNING", app={})
    fast = {"Delay": 1, "MaxAttempts": 3}
    ecs.get_waiter("tasks_running").wait(cluster="wait", tasks=tasks, WaiterConfig=fast)
    for task in tasks:
        ecs.stop_task(cluster="wait", task=task)
        report(ecs, "wait", task, "STOPPED", app={"exitCode": 0})
    ecs.get_waiter("tasks_stopped").wait(cluster="wait", tasks=tasks, WaiterConfig=fast)


def test_cli_stop_task_session(aws_cli):
    aws_cli("create-cluster", "--cluster-name", "cli-stop")
    aws_cli(
        "register-task-definition",
        "--family",
        "sleeper",
        "--container-definitions",
        '[{"name":"sleep","image":"busybox","memory":32,"command":["sleep","60"]}]',
    )
    aws_cli(
        "register-container-instance",
        "--cluster",
        "cli-stop",
        "--total-resources",
        "name=CPU,type=INTEGER,integerValue=1024",
        "name=MEMORY,type=INTEGER,integerValue=1024",
    )
    task = aws_cli("run-task", "--cluster", "cli-stop", "--task-definition", "sleeper")["tasks"][0]["taskArn"]
    assert aws_cli("describe-tasks", "--cluster", "cli-stop", "--tasks", task)["tasks"][0]["lastStatus"] == "PENDING"
    stopped = aws_cli("stop-task", "--cluster", "cli-stop", "--task", task, "--reason", "cli")["task"]
    assert stopped["desiredStatus"] == "STOPPED" and stopped["stopCode"] == "UserInitiated"


# Placement never overcommits


def test_random_operations_never_overcommit(ecs):
    rng = random.Random(20261128)
    ecs.create_cluster(clusterName="prop")
    totals = {}
    for _ in range(4):
        cpu, memory = rng.choice([512, 1024, 2048]), rng.choice([512, 1024, 3072])
        totals[register_instance(ecs, "prop", cpu=cpu, memory=memory)] = (cpu, memory)
    sizes = {}
    for i in range(4):
        cpu, memory = rng.choice([64, 128, 256, 512]), rng.choice([64, 256, 512])
        register(ecs, f"prop-{i}", cpu=cpu, memory=memory, host_port=rng.choice([None, None, 9000 + i]))
        sizes[f"prop-{i}"] = (cpu, memory)
    live = {}
    for _ in range(120):
        action = rng.random()
        if action < 0.5 or not live:
            family = rng.choice(list(sizes))
            strategy = rng.choice([[], [{"type": "binpack", "field": "memory"}], [{"type": "random"}]])
            run = ecs.run_task(cluster="prop", taskDefinition=family, count=rng.randint(1, 3), placementStrategy=strategy)
            for task in run["tasks"]:
                live[task["taskArn"]] = (task["containerInstanceArn"], family)
            for failure in run["failures"]:
                assert failure["reason"].startswith("RESOURCE:"), failure
        else:
            task = rng.choice(list(live))
            if rng.random() < 0.5:
                ecs.stop_task(cluster="prop", task=task)
            if rng.random() < 0.7:
                report(ecs, "prop", task, "STOPPED", app={"exitCode": 0})
                del live[task]
            else:
                report(ecs, "prop", task, "RUNNING", app={})
        described = ecs.describe_container_instances(cluster="prop", containerInstances=list(totals))
        for instance in described["containerInstances"]:
            held = [sizes[f] for (i, f) in live.values() if i == instance["containerInstanceArn"]]
            cpu, memory = totals[instance["containerInstanceArn"]]
            assert resource(instance, "CPU")["integerValue"] == cpu - sum(c for c, _ in held) >= 0
            assert resource(instance, "MEMORY")["integerValue"] == memory - sum(m for _, m in held) >= 0
            assert instance["runningTasksCount"] + instance["pendingTasksCount"] == len(held)
