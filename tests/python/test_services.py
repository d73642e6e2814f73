"""Services on simulated agents: the scheduler starts, replaces, scales and rolls tasks as ECS
does, and the waiters (services_stable, services_inactive) converge."""

import os
import signal
import subprocess
import threading
import time

import pytest

from conftest import Ecsd, cli_env, ecsd_binary, postgres_database

FAST = {"Delay": 1, "MaxAttempts": 60}
CLUSTER = "default"


@pytest.fixture
def fleet(tmp_path):
    server = Ecsd(tmp_path / "data", extra_args=["--simulate-agents", "3", "--no-throttle"]).start()
    ecs = server.client()
    deadline = time.time() + 30
    while True:
        try:
            if len(ecs.list_container_instances(cluster=CLUSTER)["containerInstanceArns"]) == 3:
                break
        except ecs.exceptions.ClusterNotFoundException:
            pass  # the simulated agents have yet to create it
        assert time.time() < deadline, "the simulated agents register"
        time.sleep(0.2)
    yield server
    server.stop()


def register(ecs, family, image="nginx:1", **labels):
    definition = {"name": "web", "image": image, "memory": 64, "dockerLabels": labels}
    return ecs.register_task_definition(family=family, containerDefinitions=[definition])["taskDefinition"]


def service(ecs, name="web"):
    return ecs.describe_services(cluster=CLUSTER, services=[name])["services"][0]


def test_a_service_reaches_a_steady_state_and_replaces_tasks_that_stop(fleet):
    ecs = fleet.client()
    register(ecs, "web")
    created = ecs.create_service(cluster=CLUSTER, serviceName="web", taskDefinition="web", desiredCount=3)["service"]
    assert created["status"] == "ACTIVE"
    assert created["deploymentConfiguration"]["maximumPercent"] == 200
    assert created["deploymentConfiguration"]["minimumHealthyPercent"] == 100
    assert created["schedulingStrategy"] == "REPLICA"
    assert [d["status"] for d in created["deployments"]] == ["PRIMARY"]
    assert created["deployments"][0]["id"].startswith("ecs-svc/")

    ecs.get_waiter("services_stable").wait(cluster=CLUSTER, services=["web"], WaiterConfig=FAST)
    steady = service(ecs)
    assert steady["runningCount"] == 3 and steady["pendingCount"] == 0
    assert steady["deployments"][0]["rolloutState"] == "COMPLETED"
    messages = [e["message"] for e in steady["events"]]
    assert "(service web) has reached a steady state." in messages
    assert any(m.startswith("(service web) has started 3 tasks:") for m in messages), messages

    tasks = ecs.list_tasks(cluster=CLUSTER, serviceName="web")["taskArns"]
    assert len(tasks) == 3
    described = ecs.describe_tasks(cluster=CLUSTER, tasks=tasks)["tasks"]
    assert {t["group"] for t in described} == {"service:web"}
    assert {t["startedBy"] for t in described} == {steady["deployments"][0]["id"]}
    assert len({t["containerInstanceArn"] for t in described}) == 3, "spread across the instances"

    ecs.stop_task(cluster=CLUSTER, task=tasks[0])
    ecs.get_waiter("tasks_stopped").wait(cluster=CLUSTER, tasks=[tasks[0]], WaiterConfig=FAST)
    deadline = time.time() + 30
    while True:
        now = ecs.list_tasks(cluster=CLUSTER, serviceName="web")["taskArns"]
        if len(now) == 3 and tasks[0] not in now:
            break
        assert time.time() < deadline, "the stopped task is replaced"
        time.sleep(0.2)
    ecs.get_waiter("services_stable").wait(cluster=CLUSTER, services=["web"], WaiterConfig=FAST)


def test_scaling_and_deleting_a_service(fleet):
    ecs = fleet.client()
    register(ecs, "web")
    ecs.create_service(cluster=CLUSTER, serviceName="web", taskDefinition="web", desiredCount=1)
    ecs.get_waiter("services_stable").wait(cluster=CLUSTER, services=["web"], WaiterConfig=FAST)
    ecs.update_service(cluster=CLUSTER, service="web", desiredCount=4)
    ecs.get_waiter("services_stable").wait(cluster=CLUSTER, services=["web"], WaiterConfig=FAST)
    assert service(ecs)["runningCount"] == 4
    assert len(service(ecs)["deployments"]) == 1, "a desired count alone is no new deployment"
    ecs.update_service(cluster=CLUSTER, service="web", desiredCount=2)
    ecs.get_waiter("services_stable").wait(cluster=CLUSTER, services=["web"], WaiterConfig=FAST)
    assert service(ecs)["runningCount"] == 2

    with pytest.raises(ecs.exceptions.InvalidParameterException):
        ecs.delete_service(cluster=CLUSTER, service="web")
    deleted = ecs.delete_service(cluster=CLUSTER, service="web", force=True)["service"]
    assert deleted["status"] == "DRAINING"
    ecs.get_waiter("services_inactive").wait(cluster=CLUSTER, services=["web"], WaiterConfig=FAST)
    assert ecs.list_services(cluster=CLUSTER)["serviceArns"] == []
    assert ecs.list_tasks(cluster=CLUSTER, serviceName="web")["taskArns"] == []
    with pytest.raises(ecs.exceptions.ServiceNotActiveException):
        ecs.update_service(cluster=CLUSTER, service="web", desiredCount=1)
    # The name is free again.
    again = ecs.create_service(cluster=CLUSTER, serviceName="web", taskDefinition="web", desiredCount=0)["service"]
    assert again["status"] == "ACTIVE"


def test_a_new_task_definition_rolls_within_the_deployment_configuration(fleet):
    ecs = fleet.client()
    register(ecs, "web", image="nginx:1")
    ecs.create_service(
        cluster=CLUSTER, serviceName="web", taskDefinition="web", desiredCount=3,
        deploymentConfiguration={"maximumPercent": 150, "minimumHealthyPercent": 100},
    )
    ecs.get_waiter("services_stable").wait(cluster=CLUSTER, services=["web"], WaiterConfig=FAST)
    first = service(ecs)["deployments"][0]["id"]
    second_definition = register(ecs, "web", image="nginx:2")["taskDefinitionArn"]

    samples, done = [], threading.Event()

    def sample():
        while not done.is_set():
            arns = ecs.list_tasks(cluster=CLUSTER, serviceName="web")["taskArns"]
            if arns:
                tasks = ecs.describe_tasks(cluster=CLUSTER, tasks=arns)["tasks"]
                running = sum(1 for t in tasks if t["lastStatus"] == "RUNNING" and t["desiredStatus"] == "RUNNING")
                samples.append((running, len(tasks)))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        updated = ecs.update_service(cluster=CLUSTER, service="web", taskDefinition="web")["service"]
        assert [d["status"] for d in updated["deployments"]] == ["PRIMARY", "ACTIVE"]
        ecs.get_waiter("services_stable").wait(cluster=CLUSTER, services=["web"], WaiterConfig=FAST)
    finally:
        done.set()
        sampler.join()
    after = service(ecs)
    assert len(after["deployments"]) == 1 and after["deployments"][0]["id"] != first
    assert after["taskDefinition"] == second_definition
    tasks = ecs.describe_tasks(cluster=CLUSTER, tasks=ecs.list_tasks(cluster=CLUSTER, serviceName="web")["taskArns"])["tasks"]
    assert {t["taskDefinitionArn"] for t in tasks} == {second_definition}
    assert samples, "the rollout was sampled"
    # Never fewer than 100% running, never more than 150% (4 of 3) alive, at every sample.
    assert min(running for running, _ in samples) >= 3, samples
    assert max(alive for _, alive in samples) <= 4, samples


def test_service_errors_are_the_ones_ecs_gives(fleet):
    ecs = fleet.client()
    register(ecs, "web")
    with pytest.raises(ecs.exceptions.ServiceNotFoundException):
        ecs.update_service(cluster=CLUSTER, service="ghost", desiredCount=1)
    missing = ecs.describe_services(cluster=CLUSTER, services=["ghost"])
    assert missing["failures"][0]["reason"] == "MISSING"
    with pytest.raises(ecs.exceptions.ClusterNotFoundException):
        ecs.create_service(cluster="nowhere", serviceName="web", taskDefinition="web")
    first = ecs.create_service(cluster=CLUSTER, serviceName="web", taskDefinition="web", desiredCount=1,
                               clientToken="t1")["service"]
    again = ecs.create_service(cluster=CLUSTER, serviceName="web", taskDefinition="web", desiredCount=1,
                               clientToken="t2")["service"]
    assert again["serviceArn"] == first["serviceArn"] and again["createdAt"] == first["createdAt"]
    with pytest.raises(ecs.exceptions.InvalidParameterException, match="not idempotent"):
        ecs.create_service(cluster=CLUSTER, serviceName="web", taskDefinition="web", desiredCount=2)
    with pytest.raises(ecs.exceptions.InvalidParameterException, match="not idempotent"):
        ecs.create_service(cluster=CLUSTER, serviceName="web", taskDefinition="web", desiredCount=1,
                           placementStrategy=[{"type": "binpack", "field": "memory"}])


def test_services_are_tagged_and_listed_with_filters(fleet):
    ecs = fleet.client()
    register(ecs, "web")
    arn = ecs.create_service(
        cluster=CLUSTER, serviceName="web", taskDefinition="web", desiredCount=1,
        tags=[{"key": "team", "value": "edge"}], propagateTags="SERVICE", enableECSManagedTags=True,
    )["service"]["serviceArn"]
    assert arn.endswith(":service/default/web")
    ecs.tag_resource(resourceArn=arn, tags=[{"key": "env", "value": "ci"}])
    tags = {t["key"]: t["value"] for t in ecs.list_tags_for_resource(resourceArn=arn)["tags"]}
    assert tags == {"team": "edge", "env": "ci"}
    described = ecs.describe_services(cluster=CLUSTER, services=[arn], include=["TAGS"])["services"][0]
    assert {t["key"] for t in described["tags"]} == {"team", "env"}
    assert "tags" not in ecs.describe_services(cluster=CLUSTER, services=["web"])["services"][0]
    ecs.get_waiter("services_stable").wait(cluster=CLUSTER, services=["web"], WaiterConfig=FAST)
    task = ecs.describe_tasks(cluster=CLUSTER, tasks=ecs.list_tasks(cluster=CLUSTER, serviceName=arn)["taskArns"],
                              include=["TAGS"])["tasks"][0]
    task_tags = {t["key"]: t["value"] for t in task["tags"]}
    assert task_tags["aws:ecs:serviceName"] == "web" and task_tags["aws:ecs:clusterName"] == CLUSTER
    assert task_tags["env"] == "ci", "the service's tags propagate"
    assert ecs.list_services(cluster=CLUSTER, launchType="EC2")["serviceArns"] == [arn]
    assert ecs.list_services(cluster=CLUSTER, launchType="EXTERNAL")["serviceArns"] == []
    assert ecs.list_services(cluster=CLUSTER, schedulingStrategy="REPLICA")["serviceArns"] == [arn]


def deployment_status(ecs, arn):
    return ecs.describe_service_deployments(serviceDeploymentArns=[arn])["serviceDeployments"][0]


def wait_for_status(ecs, arn, wanted, timeout=60):
    deadline = time.time() + timeout
    while True:
        found = deployment_status(ecs, arn)
        if found["status"] in wanted:
            return found
        assert time.time() < deadline, f"still {found['status']}, waiting for {wanted}"
        time.sleep(0.5)


def test_the_terraform_deployment_flow_finds_and_follows_the_service_deployment(fleet):
    ecs = fleet.client()
    register(ecs, "web", image="nginx:1")
    ecs.create_service(cluster=CLUSTER, serviceName="web", taskDefinition="web", desiredCount=2)
    ecs.get_waiter("services_stable").wait(cluster=CLUSTER, services=["web"], WaiterConfig=FAST)
    second = register(ecs, "web", image="nginx:2")["taskDefinitionArn"]
    started = time.time() - 1
    primary = ecs.update_service(cluster=CLUSTER, service="web", taskDefinition="web")["service"]["deployments"][0]
    # As terraform-provider-aws does: the service deployment created since the update whose
    # target revision carries the id after `ecs-svc/` of the PRIMARY deployment.
    listed = ecs.list_service_deployments(cluster=CLUSTER, service="web", createdAt={"after": started})["serviceDeployments"]
    revision_id = primary["id"].removeprefix("ecs-svc/")
    ours = [d for d in listed if d["targetServiceRevisionArn"].endswith("/" + revision_id)]
    assert len(ours) == 1, listed
    assert ours[0]["targetServiceRevisionArn"].startswith("arn:aws:ecs:us-east-1:123456789012:service-revision/default/web/")
    done = wait_for_status(ecs, ours[0]["serviceDeploymentArn"], {"SUCCESSFUL", "STOPPED", "ROLLBACK_SUCCESSFUL", "ROLLBACK_FAILED"})
    assert done["status"] == "SUCCESSFUL"
    assert done["finishedAt"] >= done["startedAt"]
    revision = ecs.describe_service_revisions(serviceRevisionArns=[ours[0]["targetServiceRevisionArn"]])["serviceRevisions"][0]
    assert revision["taskDefinition"] == second
    described = service(ecs)
    assert described["currentServiceDeployment"] == ours[0]["serviceDeploymentArn"]
    assert all_deployments(ecs) == 2, "the creation's and the update's"
    missing = ecs.describe_service_deployments(serviceDeploymentArns=[ours[0]["serviceDeploymentArn"] + "x"])
    assert missing["failures"][0]["reason"] == "MISSING"


def all_deployments(ecs):
    return len(ecs.list_service_deployments(cluster=CLUSTER, service="web")["serviceDeployments"])


def test_the_circuit_breaker_fails_a_deployment_whose_tasks_do_not_start_and_rolls_back(fleet):
    ecs = fleet.client()
    first = register(ecs, "web", image="nginx:1")["taskDefinitionArn"]
    ecs.create_service(
        cluster=CLUSTER, serviceName="web", taskDefinition="web", desiredCount=3,
        deploymentConfiguration={"deploymentCircuitBreaker": {"enable": True, "rollback": True}},
    )
    ecs.get_waiter("services_stable").wait(cluster=CLUSTER, services=["web"], WaiterConfig=FAST)
    register(ecs, "web", image="nginx:broken", **{"ecsd.simulate.pull-error": "CannotPullContainerError: not found"})
    failing = ecs.update_service(cluster=CLUSTER, service="web", taskDefinition="web")["service"]
    arn = failing["currentServiceDeployment"]
    done = wait_for_status(ecs, arn, {"ROLLBACK_SUCCESSFUL", "ROLLBACK_FAILED", "SUCCESSFUL", "STOPPED"}, timeout=90)
    assert done["status"] == "ROLLBACK_SUCCESSFUL", done
    assert done["deploymentCircuitBreaker"]["status"] == "TRIGGERED"
    assert done["deploymentCircuitBreaker"]["threshold"] == 3
    assert done["rollback"]["reason"] == "ECS deployment circuit breaker: tasks failed to start."
    ecs.get_waiter("services_stable").wait(cluster=CLUSTER, services=["web"], WaiterConfig=FAST)
    after = service(ecs)
    assert after["taskDefinition"] == first, "rolled back to the revision that ran"
    assert any("deployment failed: tasks failed to start." in e["message"] for e in after["events"])
    arns = ecs.list_tasks(cluster=CLUSTER, serviceName="web")["taskArns"]
    assert {t["taskDefinitionArn"] for t in ecs.describe_tasks(cluster=CLUSTER, tasks=arns)["tasks"]} == {first}
    from test_events import all_events
    changes = [e["event"]["detail"]["eventName"] for e in all_events(fleet.url, **{"detail-type": "ECS Deployment State Change"})]
    assert "SERVICE_DEPLOYMENT_FAILED" in changes and changes.count("SERVICE_DEPLOYMENT_COMPLETED") >= 2, changes


def test_stop_service_deployment_rolls_back_on_request(fleet):
    ecs = fleet.client()
    first = register(ecs, "web", image="nginx:1")["taskDefinitionArn"]
    ecs.create_service(cluster=CLUSTER, serviceName="web", taskDefinition="web", desiredCount=2)
    ecs.get_waiter("services_stable").wait(cluster=CLUSTER, services=["web"], WaiterConfig=FAST)
    # A revision no instance can hold: its deployment stays in progress.
    ecs.register_task_definition(family="web", containerDefinitions=[
        {"name": "web", "image": "nginx:huge", "memory": 1_000_000}])
    arn = ecs.update_service(cluster=CLUSTER, service="web", taskDefinition="web")["service"]["currentServiceDeployment"]
    time.sleep(1)
    assert deployment_status(ecs, arn)["status"] == "IN_PROGRESS"
    assert service(ecs)["runningCount"] == 2, "the old tasks keep running meanwhile"
    ecs.stop_service_deployment(serviceDeploymentArn=arn)
    assert wait_for_status(ecs, arn, {"ROLLBACK_SUCCESSFUL", "ROLLBACK_FAILED"})["status"] == "ROLLBACK_SUCCESSFUL"
    assert service(ecs)["taskDefinition"] == first
    with pytest.raises(ecs.exceptions.ConflictException):
        ecs.stop_service_deployment(serviceDeploymentArn=arn)


def test_a_daemon_service_runs_one_task_per_instance_as_instances_come_and_go(fleet):
    ecs = fleet.client()
    register(ecs, "agent-sidecar")
    with pytest.raises(ecs.exceptions.InvalidParameterException, match="does not support a desired count"):
        ecs.create_service(cluster=CLUSTER, serviceName="d", taskDefinition="agent-sidecar",
                           schedulingStrategy="DAEMON", desiredCount=2)
    with pytest.raises(ecs.exceptions.InvalidParameterException, match="maximumPercent"):
        ecs.create_service(cluster=CLUSTER, serviceName="d", taskDefinition="agent-sidecar",
                           schedulingStrategy="DAEMON", deploymentConfiguration={"maximumPercent": 200})
    created = ecs.create_service(cluster=CLUSTER, serviceName="d", taskDefinition="agent-sidecar",
                                 schedulingStrategy="DAEMON")["service"]
    assert created["schedulingStrategy"] == "DAEMON"
    assert created["deploymentConfiguration"]["maximumPercent"] == 100
    assert created["deploymentConfiguration"]["minimumHealthyPercent"] == 0
    ecs.get_waiter("services_stable").wait(cluster=CLUSTER, services=["d"], WaiterConfig=FAST)

    def placement():
        arns = ecs.list_tasks(cluster=CLUSTER, serviceName="d")["taskArns"]
        return sorted(t["containerInstanceArn"] for t in ecs.describe_tasks(cluster=CLUSTER, tasks=arns)["tasks"])

    instances = sorted(ecs.list_container_instances(cluster=CLUSTER)["containerInstanceArns"])
    deadline = time.time() + 30
    while placement() != instances:
        assert time.time() < deadline, "one task on each instance"
        time.sleep(0.2)
    assert service(ecs, "d")["desiredCount"] == 3

    ecs.update_container_instances_state(cluster=CLUSTER, containerInstances=[instances[0]], status="DRAINING")
    deadline = time.time() + 30
    while placement() != instances[1:]:
        assert time.time() < deadline, "a draining instance loses its daemon task"
        time.sleep(0.2)
    ecs.get_waiter("services_stable").wait(cluster=CLUSTER, services=["d"], WaiterConfig=FAST)
    assert service(ecs, "d")["desiredCount"] == 2

    ecs.update_container_instances_state(cluster=CLUSTER, containerInstances=[instances[0]], status="ACTIVE")
    deadline = time.time() + 30
    while placement() != instances:
        assert time.time() < deadline, "an instance back in service gets its daemon task"
        time.sleep(0.2)

    register(ecs, "agent-sidecar", image="nginx:2")
    ecs.update_service(cluster=CLUSTER, service="d", taskDefinition="agent-sidecar")
    ecs.get_waiter("services_stable").wait(cluster=CLUSTER, services=["d"], WaiterConfig=FAST)
    arns = ecs.list_tasks(cluster=CLUSTER, serviceName="d")["taskArns"]
    described = ecs.describe_tasks(cluster=CLUSTER, tasks=arns)["tasks"]
    assert len(described) == 3 and {t["taskDefinitionArn"].rsplit(":", 1)[1] for t in described} == {"2"}
    with pytest.raises(ecs.exceptions.InvalidParameterException):
        ecs.update_service(cluster=CLUSTER, service="d", desiredCount=5)


def test_a_deployment_carries_on_after_the_server_is_killed_mid_way(tmp_path):
    server = Ecsd(tmp_path / "data", extra_args=["--simulate-agents", "3", "--no-throttle"]).start()
    try:
        ecs = server.client()
        deadline = time.time() + 30
        while True:
            try:
                if len(ecs.list_container_instances(cluster=CLUSTER)["containerInstanceArns"]) == 3:
                    break
            except ecs.exceptions.ClusterNotFoundException:
                pass
            assert time.time() < deadline
            time.sleep(0.2)
        register(ecs, "web", image="nginx:1")
        ecs.create_service(cluster=CLUSTER, serviceName="web", taskDefinition="web", desiredCount=3)
        ecs.get_waiter("services_stable").wait(cluster=CLUSTER, services=["web"], WaiterConfig=FAST)
        second = register(ecs, "web", image="nginx:2")["taskDefinitionArn"]
        ecs.update_service(cluster=CLUSTER, service="web", taskDefinition="web")
        server.stop(signal.SIGKILL)
        server.start()
        ecs = server.client()
        ecs.get_waiter("services_stable").wait(cluster=CLUSTER, services=["web"], WaiterConfig=FAST)
        arns = ecs.list_tasks(cluster=CLUSTER, serviceName="web")["taskArns"]
        assert {t["taskDefinitionArn"] for t in ecs.describe_tasks(cluster=CLUSTER, tasks=arns)["tasks"]} == {second}
        assert service(ecs)["runningCount"] == 3
    finally:
        server.stop()


@pytest.mark.skipif(not os.environ.get("ECSD_TEST_POSTGRES"), reason="needs PostgreSQL (ECSD_TEST_POSTGRES)")
def test_two_processes_schedule_one_service_without_overshooting_and_one_carries_on_alone(tmp_path):
    store = postgres_database(tmp_path / "shared")
    first = Ecsd(tmp_path / "a", extra_args=["--no-throttle"], store=store).start()
    second = Ecsd(tmp_path / "b", extra_args=["--no-throttle"], store=store).start()
    agents = subprocess.Popen(
        [ecsd_binary(), "agent", "--endpoint", second.url, "--instances", "3",
         "--state-file", str(tmp_path / "agents.json")],
        env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        ecs = second.client()
        deadline = time.time() + 30
        while True:
            try:
                if len(ecs.list_container_instances(cluster=CLUSTER)["containerInstanceArns"]) == 3:
                    break
            except ecs.exceptions.ClusterNotFoundException:
                pass
            assert time.time() < deadline, "the agents register"
            time.sleep(0.2)
        register(ecs, "web", image="nginx:1")
        alive, done = [], threading.Event()

        def sample():
            while not done.is_set():
                alive.append(len(ecs.list_tasks(cluster=CLUSTER, serviceName="web")["taskArns"]))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            first.client().create_service(cluster=CLUSTER, serviceName="web", taskDefinition="web", desiredCount=4,
                                          deploymentConfiguration={"maximumPercent": 100, "minimumHealthyPercent": 50})
            ecs.get_waiter("services_stable").wait(cluster=CLUSTER, services=["web"], WaiterConfig=FAST)
        finally:
            done.set()
            sampler.join()
        assert max(alive) <= 4, f"both schedulers together never start more than the desired count: {alive}"
        first.stop(signal.SIGKILL)
        newer = register(ecs, "web", image="nginx:2")["taskDefinitionArn"]
        ecs.update_service(cluster=CLUSTER, service="web", taskDefinition="web")
        ecs.get_waiter("services_stable").wait(cluster=CLUSTER, services=["web"], WaiterConfig=FAST)
        arns = ecs.list_tasks(cluster=CLUSTER, serviceName="web")["taskArns"]
        assert {t["taskDefinitionArn"] for t in ecs.describe_tasks(cluster=CLUSTER, tasks=arns)["tasks"]} == {newer}
    finally:
        agents.terminate()
        agents.wait(timeout=30)
        second.stop()
        if first.process.poll() is None:
            first.stop()


def test_the_aws_cli_deploys_and_waits_for_a_service(fleet):
    import json
    aws = os.environ.get("AWS_CLI", "aws")

    def cli(*args):
        out = subprocess.run([aws, "ecs", *args, "--endpoint-url", fleet.url, "--output", "json"],
                             env=cli_env(), check=True, capture_output=True, text=True)
        return json.loads(out.stdout) if out.stdout.strip() else None

    register(fleet.client(), "web")
    cli("create-service", "--cluster", CLUSTER, "--service-name", "web", "--task-definition", "web", "--desired-count", "2")
    cli("wait", "services-stable", "--cluster", CLUSTER, "--services", "web")
    before = cli("describe-services", "--cluster", CLUSTER, "--services", "web")["services"][0]["deployments"][0]["id"]
    updated = cli("update-service", "--cluster", CLUSTER, "--service", "web", "--force-new-deployment")["service"]
    assert len(updated["deployments"]) == 2 and updated["deployments"][0]["id"] != before
    cli("wait", "services-stable", "--cluster", CLUSTER, "--services", "web")
    after = cli("describe-services", "--cluster", CLUSTER, "--services", "web")["services"][0]
    assert [d["status"] for d in after["deployments"]] == ["PRIMARY"] and after["runningCount"] == 2


def test_services_are_found_by_their_service_connect_namespace(fleet):
    ecs = fleet.client()
    register(ecs, "web")
    arn = ecs.create_service(cluster=CLUSTER, serviceName="web", taskDefinition="web", desiredCount=0,
                             serviceConnectConfiguration={"enabled": True, "namespace": "shop"})["service"]["serviceArn"]
    ecs.create_service(cluster=CLUSTER, serviceName="other", taskDefinition="web", desiredCount=0)
    assert ecs.list_services_by_namespace(namespace="shop")["serviceArns"] == [arn]
    cloud_map = "arn:aws:servicediscovery:us-east-1:123456789012:namespace/shop"
    assert ecs.list_services_by_namespace(namespace=cloud_map)["serviceArns"] == [arn]
    assert ecs.list_services_by_namespace(namespace="elsewhere")["serviceArns"] == []
    assert "serviceConnectConfiguration" not in service(ecs), "not a member of the Service shape"


def task_set(ecs, ref):
    return ecs.describe_task_sets(cluster=CLUSTER, service="ext", taskSets=[ref])["taskSets"][0]


def wait_steady(ecs, ref, count):
    deadline = time.time() + 30
    while True:
        found = task_set(ecs, ref)
        if found["stabilityStatus"] == "STEADY_STATE" and found["runningCount"] == count:
            return found
        assert time.time() < deadline, found
        time.sleep(0.2)


def test_task_sets_of_an_external_controller_scale_and_swap(fleet):
    ecs = fleet.client()
    blue = register(ecs, "web", image="nginx:blue")["taskDefinitionArn"]
    green = register(ecs, "web", image="nginx:green")["taskDefinitionArn"]
    created = ecs.create_service(cluster=CLUSTER, serviceName="ext", desiredCount=2,
                                 deploymentController={"type": "EXTERNAL"})["service"]
    assert created["deployments"] == [] and created["taskSets"] == []
    first = ecs.create_task_set(cluster=CLUSTER, service="ext", taskDefinition=blue, externalId="blue",
                                scale={"value": 100, "unit": "PERCENT"})["taskSet"]
    assert first["status"] == "PRIMARY" and first["computedDesiredCount"] == 2
    assert first["taskSetArn"].startswith("arn:aws:ecs:us-east-1:123456789012:task-set/default/ext/")
    wait_steady(ecs, first["id"], 2)
    second = ecs.create_task_set(cluster=CLUSTER, service="ext", taskDefinition=green, externalId="green",
                                 scale={"value": 50, "unit": "PERCENT"})["taskSet"]
    assert second["status"] == "ACTIVE" and second["computedDesiredCount"] == 1
    wait_steady(ecs, second["taskSetArn"], 1)
    ecs.update_service_primary_task_set(cluster=CLUSTER, service="ext", primaryTaskSet=second["id"])
    ecs.update_task_set(cluster=CLUSTER, service="ext", taskSet=second["id"], scale={"value": 100, "unit": "PERCENT"})
    ecs.update_task_set(cluster=CLUSTER, service="ext", taskSet=first["id"], scale={"value": 0, "unit": "PERCENT"})
    wait_steady(ecs, second["id"], 2)
    wait_steady(ecs, first["id"], 0)
    described = service(ecs, "ext")
    assert described["taskDefinition"] == green
    assert {s["id"]: s["status"] for s in described["taskSets"]} == {first["id"]: "ACTIVE", second["id"]: "PRIMARY"}
    ecs.delete_task_set(cluster=CLUSTER, service="ext", taskSet=first["id"])
    deadline = time.time() + 30
    while len(ecs.describe_task_sets(cluster=CLUSTER, service="ext")["taskSets"]) != 1:
        assert time.time() < deadline, "a deleted task set leaves the service"
        time.sleep(0.2)
    arns = ecs.list_tasks(cluster=CLUSTER, serviceName="ext")["taskArns"]
    assert {t["taskDefinitionArn"] for t in ecs.describe_tasks(cluster=CLUSTER, tasks=arns)["tasks"]} == {green}
    with pytest.raises(ecs.exceptions.InvalidParameterException, match="belong to task sets"):
        ecs.update_service(cluster=CLUSTER, service="ext", taskDefinition=blue)
    with pytest.raises(ecs.exceptions.TaskSetNotFoundException):
        ecs.update_task_set(cluster=CLUSTER, service="ext", taskSet="ecs-svc/0", scale={"value": 1, "unit": "PERCENT"})
    register(ecs, "plain")
    ecs.create_service(cluster=CLUSTER, serviceName="plain", taskDefinition="plain", desiredCount=0)
    with pytest.raises(ecs.exceptions.InvalidParameterException, match="EXTERNAL"):
        ecs.create_task_set(cluster=CLUSTER, service="plain", taskDefinition=blue)


def register_checked(ecs, family, image, **labels):
    definition = {"name": "web", "image": image, "memory": 64, "dockerLabels": labels,
                  "healthCheck": {"command": ["CMD-SHELL", "curl -f http://localhost/ || exit 1"], "interval": 5}}
    return ecs.register_task_definition(family=family, containerDefinitions=[definition])["taskDefinition"]


def test_health_checks_gate_steady_state_and_trip_the_circuit_breaker_in_its_second_stage(fleet):
    ecs = fleet.client()
    first = register_checked(ecs, "web", "nginx:1")["taskDefinitionArn"]
    ecs.create_service(
        cluster=CLUSTER, serviceName="web", taskDefinition="web", desiredCount=3,
        deploymentConfiguration={"deploymentCircuitBreaker": {"enable": True, "rollback": True}},
    )
    ecs.get_waiter("services_stable").wait(cluster=CLUSTER, services=["web"], WaiterConfig=FAST)
    arns = ecs.list_tasks(cluster=CLUSTER, serviceName="web")["taskArns"]
    assert {t["healthStatus"] for t in ecs.describe_tasks(cluster=CLUSTER, tasks=arns)["tasks"]} == {"HEALTHY"}, \
        "the simulated agents report health over TCS, and the service is steady once it is HEALTHY"

    register_checked(ecs, "web", "nginx:sick", **{"ecsd.simulate.health": "UNHEALTHY"})
    arn = ecs.update_service(cluster=CLUSTER, service="web", taskDefinition="web")["service"]["currentServiceDeployment"]
    done = wait_for_status(ecs, arn, {"ROLLBACK_SUCCESSFUL", "ROLLBACK_FAILED", "SUCCESSFUL", "STOPPED"}, timeout=90)
    assert done["status"] == "ROLLBACK_SUCCESSFUL", done
    assert done["rollback"]["reason"] == "ECS deployment circuit breaker: tasks failed health checks."
    ecs.get_waiter("services_stable").wait(cluster=CLUSTER, services=["web"], WaiterConfig=FAST)
    after = service(ecs)
    assert after["taskDefinition"] == first
    assert any("failed container health checks" in e["message"] for e in after["events"])
    arns = ecs.list_tasks(cluster=CLUSTER, serviceName="web")["taskArns"]
    assert {t["taskDefinitionArn"] for t in ecs.describe_tasks(cluster=CLUSTER, tasks=arns)["tasks"]} == {first}


def test_a_code_deploy_service_starts_with_a_primary_task_set_and_refuses_new_task_definitions(fleet):
    ecs = fleet.client()
    blue = register(ecs, "web", image="nginx:blue")["taskDefinitionArn"]
    created = ecs.create_service(cluster=CLUSTER, serviceName="cd", taskDefinition="web", desiredCount=2,
                                 deploymentController={"type": "CODE_DEPLOY"})["service"]
    assert created["deployments"] == []
    assert [(s["status"], s["taskDefinition"]) for s in created["taskSets"]] == [("PRIMARY", blue)]
    deadline = time.time() + 30
    while True:
        found = service(ecs, "cd")["taskSets"][0]
        if found["stabilityStatus"] == "STEADY_STATE" and found["runningCount"] == 2:
            break
        assert time.time() < deadline, found
        time.sleep(0.2)
    with pytest.raises(ecs.exceptions.InvalidParameterException):
        ecs.update_service(cluster=CLUSTER, service="cd", taskDefinition="web")
    with pytest.raises(ecs.exceptions.InvalidParameterException, match="EXTERNAL"):
        ecs.create_task_set(cluster=CLUSTER, service="cd", taskDefinition=blue)
