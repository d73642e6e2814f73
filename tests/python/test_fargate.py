"""Fargate, capacity providers, account settings and task protection, through boto3 and the AWS
CLI against the real binary."""

import collections
import signal
import time

import botocore.exceptions
import pytest

from conftest import Ecsd

SUBNET = "subnet-0a1b2c3d"
NETWORK = {"awsvpcConfiguration": {"subnets": [SUBNET], "securityGroups": ["sg-0a1b2c3d"]}}
# Subnets not configured: each has a /24 of its own.
WIDE = {"awsvpcConfiguration": {"subnets": ["subnet-0b0b0b0b", "subnet-0c0c0c0c"]}}
ASG = "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:0e0c1b2a-1111-2222-3333-444455556666:autoScalingGroupName/{}"


@pytest.fixture
def server(tmp_path):
    # One subnet with a small range, so that address reuse shows.
    ecsd = Ecsd(
        tmp_path / "data",
        ["--fargate-subnet", f"{SUBNET}=10.9.8.0/28", "--scale-in-after-secs", "1"],
    ).start()
    yield ecsd
    if ecsd.process.poll() is None:
        ecsd.stop()


@pytest.fixture
def ecs(server):
    return server.client()


@pytest.fixture
def ecsd(server):
    # The fixtures shared by every module (the AWS CLI's) talk to this module's server, not to a
    # second one on the same data folder.
    return server


def fargate_definition(ecs, family="web", cpu="256", memory="512", **labels):
    return ecs.register_task_definition(
        family=family,
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        cpu=cpu,
        memory=memory,
        containerDefinitions=[{"name": "app", "image": "nginx:1", "essential": True, "dockerLabels": labels}],
    )["taskDefinition"]


def fargate_service(ecs, desired, network):
    """A Fargate service `api` of `desired` tasks in a new cluster `fg`, stable; its task ARNs."""
    ecs.create_cluster(clusterName="fg")
    fargate_definition(ecs)
    ecs.create_service(cluster="fg", serviceName="api", taskDefinition="web", desiredCount=desired,
                       launchType="FARGATE", networkConfiguration=network)
    ecs.get_waiter("services_stable").wait(cluster="fg", services=["api"], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    return ecs.list_tasks(cluster="fg", serviceName="api")["taskArns"]


def error_of(call, **kwargs):
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        call(**kwargs)
    return caught.value.response["Error"]


def wait_for(check, timeout=30, every=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


def detail(task, name):
    return next(d["value"] for d in task["attachments"][0]["details"] if d["name"] == name)


def test_a_fargate_task_goes_through_fargates_lifecycle_with_its_network_interface(ecs):
    ecs.create_cluster(clusterName="fg")
    definition = fargate_definition(ecs, **{"ecsd.simulate.run-seconds": "1", "ecsd.simulate.exit-code": "3"})
    assert definition["compatibilities"] == ["EC2", "EXTERNAL", "FARGATE"]
    task = ecs.run_task(cluster="fg", taskDefinition="web", launchType="FARGATE", networkConfiguration=NETWORK)["tasks"][0]
    assert task["lastStatus"] == "PROVISIONING"
    assert "containerInstanceArn" not in task
    assert task["launchType"] == "FARGATE"
    assert task["capacityProviderName"] == "FARGATE"
    assert task["platformVersion"] == "1.4.0"
    assert task["platformFamily"] == "Linux"
    assert task["ephemeralStorage"] == {"sizeInGiB": 20}
    assert task["availabilityZone"].startswith("us-east-1")
    assert task["attachments"][0]["type"] == "ElasticNetworkInterface"
    assert task["attachments"][0]["status"] == "PRECREATED"
    seen, running = [], None
    while not seen or seen[-1] != "STOPPED":
        described = ecs.describe_tasks(cluster="fg", tasks=[task["taskArn"]])["tasks"][0]
        if not seen or seen[-1] != described["lastStatus"]:
            seen.append(described["lastStatus"])
        if described["lastStatus"] == "RUNNING":
            running = described
        assert len(seen) < 9
        time.sleep(0.05)
    # Every step of Fargate's lifecycle, in order (a fast poll sees each one).
    order = ["PROVISIONING", "PENDING", "ACTIVATING", "RUNNING", "DEACTIVATING", "STOPPING", "DEPROVISIONING", "STOPPED"]
    assert seen == order
    assert running["attachments"][0]["status"] == "ATTACHED"
    address = detail(running, "privateIPv4Address")
    assert address.startswith("10.9.8.")
    assert detail(running, "subnetId") == SUBNET
    assert detail(running, "networkInterfaceId").startswith("eni-")
    assert detail(running, "privateDnsName") == "ip-" + address.replace(".", "-") + ".ec2.internal"
    assert running["containers"][0]["networkInterfaces"][0]["privateIpv4Address"] == address
    assert running["connectivity"] == "CONNECTED"
    stopped = ecs.describe_tasks(cluster="fg", tasks=[task["taskArn"]])["tasks"][0]
    assert stopped["stopCode"] == "EssentialContainerExited"
    assert stopped["containers"][0]["exitCode"] == 3
    assert stopped["attachments"][0]["status"] == "DELETED"


def test_fargate_addresses_are_unique_while_held_and_reused_once_released(ecs):
    ecs.create_cluster(clusterName="fg")
    fargate_definition(ecs)
    # A /28 keeps 11 addresses for tasks: .4 to .14.
    first = ecs.run_task(cluster="fg", taskDefinition="web", launchType="FARGATE", count=10, networkConfiguration=NETWORK)["tasks"]
    second = ecs.run_task(cluster="fg", taskDefinition="web", launchType="FARGATE", count=2, networkConfiguration=NETWORK)["tasks"]
    arns = [t["taskArn"] for t in first + second]

    def settled():
        tasks = ecs.describe_tasks(cluster="fg", tasks=arns)["tasks"]
        return tasks if all(t["lastStatus"] in ("RUNNING", "STOPPED") for t in tasks) else None

    tasks = wait_for(settled)
    running = [t for t in tasks if t["lastStatus"] == "RUNNING"]
    addresses = [detail(t, "privateIPv4Address") for t in running]
    assert len(running) == 11 and len(set(addresses)) == 11
    assert set(addresses) == {f"10.9.8.{i}" for i in range(4, 15)}
    starved = [t for t in tasks if t["lastStatus"] == "STOPPED"]
    assert len(starved) == 1 and starved[0]["stopCode"] == "TaskFailedToStart"
    assert "no free addresses" in starved[0]["stoppedReason"]
    # One stops: its address is free again, and the next task takes it.
    freed = detail(running[0], "privateIPv4Address")
    ecs.stop_task(cluster="fg", task=running[0]["taskArn"])
    wait_for(lambda: ecs.describe_tasks(cluster="fg", tasks=[running[0]["taskArn"]])["tasks"][0]["lastStatus"] == "STOPPED")
    again = ecs.run_task(cluster="fg", taskDefinition="web", launchType="FARGATE", networkConfiguration=NETWORK)["tasks"][0]
    ecs.get_waiter("tasks_running").wait(cluster="fg", tasks=[again["taskArn"]], WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    again = ecs.describe_tasks(cluster="fg", tasks=[again["taskArn"]])["tasks"][0]
    assert detail(again, "privateIPv4Address") == freed


def test_fargate_requests_are_checked_as_ecs_checks_them(ecs):
    ecs.create_cluster(clusterName="fg")
    register = ecs.register_task_definition
    container = [{"name": "app", "image": "nginx:1"}]
    e = error_of(register, family="x", requiresCompatibilities=["FARGATE"], cpu="256", memory="512", containerDefinitions=container)
    assert e["Code"] == "ClientException" and "awsvpc" in e["Message"]
    e = error_of(register, family="x", networkMode="awsvpc", requiresCompatibilities=["FARGATE"], memory="512", containerDefinitions=container)
    assert e["Message"] == "Fargate requires that 'cpu' be defined at the task level."
    e = error_of(register, family="x", networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="4096", containerDefinitions=container)
    assert e["Message"].startswith("No Fargate configuration exists for given values: 256 CPU, 4096 memory.")
    # A definition that does not fit Fargate registers for EC2, and Fargate refuses to run it.
    ecs.register_task_definition(family="bridge", containerDefinitions=[{"name": "app", "image": "nginx:1", "memory": 128}])
    e = error_of(ecs.run_task, cluster="fg", taskDefinition="bridge", launchType="FARGATE", networkConfiguration=NETWORK)
    assert e["Code"] == "InvalidParameterException"
    assert e["Message"] == "Task definition does not support launch_type FARGATE."
    fargate_definition(ecs)
    e = error_of(ecs.run_task, cluster="fg", taskDefinition="web", launchType="FARGATE")
    assert e["Message"] == "Network Configuration must be provided when networkMode 'awsvpc' is specified."
    e = error_of(ecs.run_task, cluster="fg", taskDefinition="web", launchType="FARGATE", platformVersion="0.9.0", networkConfiguration=NETWORK)
    assert e["Message"] == "The specified platform does not exist."
    e = error_of(ecs.run_task, cluster="fg", taskDefinition="web", launchType="FARGATE",
                 networkConfiguration={"awsvpcConfiguration": {"subnets": ["not-a-subnet"]}})
    assert "not-a-subnet" in e["Message"]
    e = error_of(ecs.run_task, cluster="fg", taskDefinition="web", launchType="FARGATE", networkConfiguration=NETWORK,
                 capacityProviderStrategy=[{"capacityProvider": "FARGATE", "weight": 1}])
    assert e["Message"].startswith("Specifying both a launch type and capacity provider strategy is not supported")


def test_a_fargate_service_is_stable_through_the_waiter_and_rolls_a_new_definition(ecs, server):
    ecs.create_cluster(clusterName="fg")
    fargate_definition(ecs)
    service = ecs.create_service(cluster="fg", serviceName="api", taskDefinition="web", desiredCount=3,
                                 launchType="FARGATE", networkConfiguration=NETWORK)["service"]
    assert service["launchType"] == "FARGATE"
    assert service["platformVersion"] == "LATEST" and service["platformFamily"] == "Linux"
    ecs.get_waiter("services_stable").wait(cluster="fg", services=["api"], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    cluster = ecs.describe_clusters(clusters=["fg"], include=["STATISTICS"])["clusters"][0]
    statistics = {s["name"]: s["value"] for s in cluster["statistics"]}
    assert cluster["activeServicesCount"] == 1
    assert statistics["activeFargateServiceCount"] == "1" and statistics["activeEC2ServiceCount"] == "0"
    assert statistics["runningFargateTasksCount"] == "3"
    arns = ecs.list_tasks(cluster="fg", serviceName="api")["taskArns"]
    tasks = ecs.describe_tasks(cluster="fg", tasks=arns)["tasks"]
    assert len(tasks) == 3 and {t["launchType"] for t in tasks} == {"FARGATE"}
    assert {t["lastStatus"] for t in tasks} == {"RUNNING"}
    fargate_definition(ecs, cpu="512", memory="1024")
    ecs.update_service(cluster="fg", service="api", taskDefinition="web:2")
    ecs.get_waiter("services_stable").wait(cluster="fg", services=["api"], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    arns = ecs.list_tasks(cluster="fg", serviceName="api")["taskArns"]
    tasks = ecs.describe_tasks(cluster="fg", tasks=arns)["tasks"]
    assert {t["taskDefinitionArn"].rsplit(":", 1)[1] for t in tasks} == {"2"}
    assert {t["cpu"] for t in tasks} == {"512"}


def test_strategies_split_tasks_base_first_then_by_weight(ecs):
    ecs.create_cluster(
        clusterName="cp",
        capacityProviders=["FARGATE", "FARGATE_SPOT"],
        defaultCapacityProviderStrategy=[
            {"capacityProvider": "FARGATE", "base": 2, "weight": 1},
            {"capacityProvider": "FARGATE_SPOT", "weight": 3},
        ],
    )
    fargate_definition(ecs)
    # The cluster's default strategy: base 2 on FARGATE, then 1:3 over the other 8.
    tasks = ecs.run_task(cluster="cp", taskDefinition="web", count=10, networkConfiguration=WIDE)["tasks"]
    assert collections.Counter(t["capacityProviderName"] for t in tasks) == {"FARGATE": 4, "FARGATE_SPOT": 6}
    assert {t["launchType"] for t in tasks} == {"FARGATE"}
    # A strategy in the request wins over the cluster's.
    tasks = ecs.run_task(cluster="cp", taskDefinition="web", count=4, networkConfiguration=WIDE,
                         capacityProviderStrategy=[{"capacityProvider": "FARGATE_SPOT", "weight": 1}])["tasks"]
    assert {t["capacityProviderName"] for t in tasks} == {"FARGATE_SPOT"}
    e = error_of(ecs.run_task, cluster="cp", taskDefinition="web", networkConfiguration=WIDE,
                 capacityProviderStrategy=[{"capacityProvider": "FARGATE", "base": 1, "weight": 1},
                                           {"capacityProvider": "FARGATE_SPOT", "base": 1, "weight": 1}])
    assert e["Code"] == "InvalidParameterException"
    ecs.create_cluster(clusterName="bare")
    e = error_of(ecs.run_task, cluster="bare", taskDefinition="web", networkConfiguration=WIDE,
                 capacityProviderStrategy=[{"capacityProvider": "FARGATE", "weight": 1}])
    assert "not associated with the cluster" in e["Message"]
    # A service takes the cluster's default strategy, and keeps the split as it scales.
    service = ecs.create_service(cluster="cp", serviceName="mix", taskDefinition="web", desiredCount=6,
                                 networkConfiguration=WIDE)["service"]
    assert "launchType" not in service
    assert [i["capacityProvider"] for i in service["capacityProviderStrategy"]] == ["FARGATE", "FARGATE_SPOT"]
    ecs.get_waiter("services_stable").wait(cluster="cp", services=["mix"], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    arns = ecs.list_tasks(cluster="cp", serviceName="mix")["taskArns"]
    tasks = ecs.describe_tasks(cluster="cp", tasks=arns)["tasks"]
    # Base 2, then 1:3 over the other 4: FARGATE 3, FARGATE_SPOT 3.
    assert collections.Counter(t["capacityProviderName"] for t in tasks) == {"FARGATE": 3, "FARGATE_SPOT": 3}


def test_a_fargate_spot_task_is_interrupted_on_request(ecs):
    ecs.create_cluster(clusterName="cp", capacityProviders=["FARGATE_SPOT"], defaultCapacityProviderStrategy=[])
    fargate_definition(ecs)
    task = ecs.run_task(cluster="cp", taskDefinition="web", networkConfiguration=NETWORK,
                        capacityProviderStrategy=[{"capacityProvider": "FARGATE_SPOT", "weight": 1}])["tasks"][0]
    ecs.get_waiter("tasks_running").wait(cluster="cp", tasks=[task["taskArn"]], WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    ecs.tag_resource(resourceArn=task["taskArn"], tags=[{"key": "ecsd:spot-interruption", "value": "now"}])
    ecs.get_waiter("tasks_stopped").wait(cluster="cp", tasks=[task["taskArn"]], WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    stopped = ecs.describe_tasks(cluster="cp", tasks=[task["taskArn"]])["tasks"][0]
    assert stopped["stopCode"] == "SpotInterruption"
    assert stopped["stoppedReason"] == "Your Spot Task was interrupted."


def asg_provider(ecs, name, max_size=4, **scaling):
    return ecs.create_capacity_provider(
        name=name,
        autoScalingGroupProvider={
            "autoScalingGroupArn": ASG.format(name),
            "managedScaling": {"status": "ENABLED", "targetCapacity": 100, **scaling},
            "managedTerminationProtection": "ENABLED",
        },
        tags=[{"key": "ecsd:max-size", "value": str(max_size)}, {"key": "ecsd:instance-cpu", "value": "1024"},
              {"key": "ecsd:instance-memory", "value": "2048"}],
    )["capacityProvider"]


def instances(ecs, cluster):
    arns = ecs.list_container_instances(cluster=cluster, status="ACTIVE")["containerInstanceArns"]
    return ecs.describe_container_instances(cluster=cluster, containerInstances=arns)["containerInstances"] if arns else []


def test_managed_scaling_grows_from_no_instance_to_enough_and_back(ecs):
    provider = asg_provider(ecs, "web-cp", maximumScalingStepSize=2)
    assert provider["status"] == "ACTIVE" and provider["type"] == "EC2_AUTOSCALING"
    scaling = provider["autoScalingGroupProvider"]["managedScaling"]
    assert scaling == {"status": "ENABLED", "targetCapacity": 100, "minimumScalingStepSize": 1,
                       "maximumScalingStepSize": 2, "instanceWarmupPeriod": 300}
    ecs.create_cluster(clusterName="asg", capacityProviders=["web-cp"],
                       defaultCapacityProviderStrategy=[{"capacityProvider": "web-cp", "weight": 1}])
    ecs.register_task_definition(family="half", cpu="512", memory="512", containerDefinitions=[{"name": "app", "image": "nginx:1"}])
    assert instances(ecs, "asg") == []
    # Five tasks of half an instance each: they wait for capacity, and three instances come.
    tasks = ecs.run_task(cluster="asg", taskDefinition="half", count=5)["tasks"]
    assert [t["lastStatus"] for t in tasks] == ["PROVISIONING"] * 5
    assert {t["capacityProviderName"] for t in tasks} == {"web-cp"}
    arns = [t["taskArn"] for t in tasks]
    ecs.get_waiter("tasks_running").wait(cluster="asg", tasks=arns, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    running = instances(ecs, "asg")
    assert len(running) == 3
    assert {i["capacityProviderName"] for i in running} == {"web-cp"}
    assert all(i["agentConnected"] and i["ec2InstanceId"].startswith("i-") for i in running)
    described = ecs.describe_tasks(cluster="asg", tasks=arns)["tasks"]
    assert {t["containerInstanceArn"] for t in described} <= {i["containerInstanceArn"] for i in running}
    # Removing the provider from the cluster while its tasks run is refused.
    e = error_of(ecs.put_cluster_capacity_providers, cluster="asg", capacityProviders=[], defaultCapacityProviderStrategy=[])
    assert e["Code"] == "ResourceInUseException"
    # Deleting it while it is associated fails, and says why.
    failed = ecs.delete_capacity_provider(capacityProvider="web-cp")["capacityProvider"]
    assert failed["status"] == "ACTIVE" and failed["updateStatus"] == "DELETE_FAILED"
    assert "asg" in failed["updateStatusReason"]
    for arn in arns:
        ecs.stop_task(cluster="asg", task=arn)
    wait_for(lambda: instances(ecs, "asg") == [], timeout=30)
    ecs.put_cluster_capacity_providers(cluster="asg", capacityProviders=[], defaultCapacityProviderStrategy=[])
    gone = ecs.delete_capacity_provider(capacityProvider="web-cp")["capacityProvider"]
    assert gone["status"] == "INACTIVE" and gone["updateStatus"] == "DELETE_COMPLETE"
    listed = [p["name"] for p in ecs.describe_capacity_providers()["capacityProviders"]]
    assert listed == ["FARGATE", "FARGATE_SPOT"]


def test_a_task_larger_than_any_instance_waits_in_provisioning(ecs):
    asg_provider(ecs, "small", max_size=2)
    ecs.create_cluster(clusterName="asg", capacityProviders=["small"],
                       defaultCapacityProviderStrategy=[{"capacityProvider": "small", "weight": 1}])
    ecs.register_task_definition(family="huge", cpu="4096", memory="512", containerDefinitions=[{"name": "app", "image": "nginx:1"}])
    task = ecs.run_task(cluster="asg", taskDefinition="huge")["tasks"][0]
    time.sleep(2)
    assert ecs.describe_tasks(cluster="asg", tasks=[task["taskArn"]])["tasks"][0]["lastStatus"] == "PROVISIONING"
    # The group grew as far as it may, and no further.
    assert len(instances(ecs, "asg")) == 2


def test_capacity_provider_errors_are_the_ones_ecs_gives(ecs):
    create = ecs.create_capacity_provider
    e = error_of(create, name="fargate-mine", autoScalingGroupProvider={"autoScalingGroupArn": ASG.format("a")})
    assert e["Code"] == "InvalidParameterException" and "prefixed" in e["Message"]
    asg_provider(ecs, "one")
    e = error_of(create, name="one", autoScalingGroupProvider={"autoScalingGroupArn": ASG.format("b")})
    assert e["Code"] == "ClientException" and "already exists" in e["Message"]
    e = error_of(ecs.delete_capacity_provider, capacityProvider="FARGATE")
    assert "reserved" in e["Message"]
    e = error_of(ecs.put_cluster_capacity_providers, cluster="default", capacityProviders=["FARGATE"], defaultCapacityProviderStrategy=[])
    assert e["Code"] == "ClusterNotFoundException"
    ecs.create_cluster(clusterName="c")
    e = error_of(ecs.put_cluster_capacity_providers, cluster="c", capacityProviders=["nope"], defaultCapacityProviderStrategy=[])
    assert e["Code"] == "InvalidParameterException"
    e = error_of(ecs.put_cluster_capacity_providers, cluster="c", capacityProviders=["FARGATE", "one"],
                 defaultCapacityProviderStrategy=[{"capacityProvider": "FARGATE", "weight": 1}, {"capacityProvider": "one", "weight": 1}])
    assert "mix" in e["Message"]
    described = ecs.describe_capacity_providers(capacityProviders=["one", "missing"], include=["TAGS"])
    assert described["capacityProviders"][0]["tags"]
    assert described["failures"][0]["reason"] == "MISSING"


def test_account_settings_are_kept_per_principal_and_default_new_clusters(ecs, aws_cli):
    setting = ecs.put_account_setting(name="containerInsights", value="enhanced")["setting"]
    assert setting == {"name": "containerInsights", "value": "enhanced",
                       "principalArn": "arn:aws:iam::123456789012:user/test", "type": "user"}
    ecs.put_account_setting_default(name="awsvpcTrunking", value="enabled")
    effective = {s["name"]: s for s in ecs.list_account_settings(effectiveSettings=True, maxResults=10)["settings"]}
    assert effective["containerInsights"]["value"] == "enhanced"
    assert effective["awsvpcTrunking"]["value"] == "enabled"
    assert effective["awsvpcTrunking"]["type"] == "user"
    assert effective["guardDutyActivate"] == {"name": "guardDutyActivate", "value": "off",
                                              "principalArn": "arn:aws:iam::123456789012:user/test",
                                              "type": "aws_managed"}
    # Paged as the model says: at most 10 a page, and a token for the rest.
    first = ecs.list_account_settings(effectiveSettings=True)
    assert len(first["settings"]) == 10 and first["nextToken"]
    rest = ecs.list_account_settings(effectiveSettings=True, nextToken=first["nextToken"])["settings"]
    assert len(rest) == 1 and rest[0]["name"] not in {s["name"] for s in first["settings"]}
    own = ecs.list_account_settings()["settings"]
    assert [s["name"] for s in own] == ["containerInsights"]
    # The setting is what a new cluster's settings say.
    ecs.create_cluster(clusterName="watched")
    cluster = ecs.describe_clusters(clusters=["watched"], include=["SETTINGS"])["clusters"][0]
    assert cluster["settings"] == [{"name": "containerInsights", "value": "enhanced"}]
    e = error_of(ecs.put_account_setting, name="containerInsights", value="on")
    assert e["Code"] == "InvalidParameterException"
    e = error_of(ecs.put_account_setting, name="taskLongArnFormat", value="disabled")
    assert e["Code"] == "InvalidParameterException"
    e = error_of(ecs.put_account_setting, name="fargateTaskRetirementWaitPeriod", value="14")
    assert e["Code"] == "InvalidParameterException"
    assert ecs.put_account_setting_default(name="fargateTaskRetirementWaitPeriod", value="14")["setting"]["value"] == "14"
    deleted = aws_cli("delete-account-setting", "--name", "containerInsights")["setting"]
    assert deleted["value"] == "enhanced"
    assert ecs.list_account_settings(effectiveSettings=True, name="containerInsights")["settings"][0]["value"] == "disabled"


def test_task_protection_holds_a_scale_in_until_it_ends(ecs):
    arns = fargate_service(ecs, 3, NETWORK)
    protected = ecs.update_task_protection(cluster="fg", tasks=arns[:1], protectionEnabled=True, expiresInMinutes=1)
    assert protected["protectedTasks"][0]["protectionEnabled"] is True
    expires = protected["protectedTasks"][0]["expirationDate"].timestamp()
    assert 50 < expires - time.time() <= 60
    assert ecs.get_task_protection(cluster="fg", tasks=arns[:1])["protectedTasks"][0]["protectionEnabled"] is True
    assert ecs.get_task_protection(cluster="fg", tasks=arns[1:2])["protectedTasks"][0]["protectionEnabled"] is False
    ecs.update_service(cluster="fg", service="api", desiredCount=0)
    wait_for(lambda: ecs.list_tasks(cluster="fg", serviceName="api")["taskArns"] == arns[:1])
    time.sleep(1.5)
    assert ecs.list_tasks(cluster="fg", serviceName="api")["taskArns"] == arns[:1]
    events = [e["message"] for e in ecs.describe_services(cluster="fg", services=["api"])["services"][0]["events"]]
    assert any("unable to scale in due to (reason: 1 tasks under protection)" in m for m in events)
    # Protection off: the scale-in proceeds.
    ecs.update_task_protection(cluster="fg", tasks=arns[:1], protectionEnabled=False)
    wait_for(lambda: ecs.list_tasks(cluster="fg", serviceName="api")["taskArns"] == [])
    # Standalone tasks cannot be protected; bad input is refused.
    task = ecs.run_task(cluster="fg", taskDefinition="web", launchType="FARGATE", networkConfiguration=NETWORK)["tasks"][0]
    failures = ecs.update_task_protection(cluster="fg", tasks=[task["taskArn"], "0" * 32], protectionEnabled=True)["failures"]
    assert [f["reason"] for f in failures] == ["TASK_NOT_VALID", "MISSING"]
    e = error_of(ecs.update_task_protection, cluster="fg", tasks=arns[:1], protectionEnabled=True, expiresInMinutes=2881)
    assert e["Code"] == "InvalidParameterException" and "expiresInMinutes" in e["Message"]


def test_instances_of_simulated_agents_join_a_provider_and_run_its_tasks(tmp_path):
    server = Ecsd(tmp_path / "data", ["--simulate-agents", "2", "--cluster", "own", "--capacity-provider", "own-cp"]).start()
    try:
        ecs = server.client()
        ecs.create_cluster(clusterName="own")
        ecs.create_capacity_provider(name="own-cp", autoScalingGroupProvider={"autoScalingGroupArn": ASG.format("own")})
        ecs.put_cluster_capacity_providers(cluster="own", capacityProviders=["own-cp"],
                                           defaultCapacityProviderStrategy=[{"capacityProvider": "own-cp", "weight": 1}])
        joined = wait_for(lambda: len(instances(ecs, "own")) == 2 and instances(ecs, "own"))
        assert {i["capacityProviderName"] for i in joined} == {"own-cp"}
        ecs.register_task_definition(family="small", containerDefinitions=[{"name": "app", "image": "nginx:1", "memory": 64}])
        tasks = ecs.run_task(cluster="own", taskDefinition="small", count=2)["tasks"]
        assert {t["capacityProviderName"] for t in tasks} == {"own-cp"}
        arns = [t["taskArn"] for t in tasks]
        # The agents received them over ACS and report them running.
        ecs.get_waiter("tasks_running").wait(cluster="own", tasks=arns, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
        assert len({t["containerInstanceArn"] for t in ecs.describe_tasks(cluster="own", tasks=arns)["tasks"]}) == 2
    finally:
        server.stop()


def test_fargate_tasks_carry_on_after_the_server_is_killed(tmp_path):
    server = Ecsd(tmp_path / "data").start()
    ecs = server.client()
    ecs.create_cluster(clusterName="fg")
    fargate_definition(ecs, **{"ecsd.simulate.run-seconds": "2"})
    tasks = ecs.run_task(cluster="fg", taskDefinition="web", launchType="FARGATE", count=3, networkConfiguration=WIDE)["tasks"]
    arns = [t["taskArn"] for t in tasks]
    time.sleep(0.6)
    server.stop(signal.SIGKILL)
    server.start()
    ecs = server.client()
    try:
        ecs.get_waiter("tasks_stopped").wait(cluster="fg", tasks=arns, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
        stopped = ecs.describe_tasks(cluster="fg", tasks=arns)["tasks"]
        assert {t["stopCode"] for t in stopped} == {"EssentialContainerExited"}
        assert {t["attachments"][0]["status"] for t in stopped} == {"DELETED"}
    finally:
        server.stop()


def test_a_service_on_a_provider_waits_for_capacity_and_hears_when_it_has_it(ecs, server):
    from test_events import all_events

    provider = asg_provider(ecs, "svc-cp")
    ecs.create_cluster(clusterName="asg", capacityProviders=["svc-cp"],
                       defaultCapacityProviderStrategy=[{"capacityProvider": "svc-cp", "weight": 1}])
    ecs.register_task_definition(family="half", cpu="512", memory="512", containerDefinitions=[{"name": "app", "image": "nginx:1"}])
    service = ecs.create_service(cluster="asg", serviceName="w", taskDefinition="half", desiredCount=3)["service"]
    assert service["capacityProviderStrategy"] == [{"capacityProvider": "svc-cp", "weight": 1}]
    ecs.get_waiter("services_stable").wait(cluster="asg", services=["w"], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    # Three tasks of half an instance: two instances.
    assert len(instances(ecs, "asg")) == 2
    statistics = ecs.describe_clusters(clusters=["asg"], include=["STATISTICS"])["clusters"][0]["statistics"]
    assert {s["name"]: s["value"] for s in statistics}["activeEC2ServiceCount"] == "1"

    def steady():
        actions = all_events(server.url, **{"detail-type": "ECS Service Action"})
        return [e["event"]["detail"] for e in actions if e["event"]["detail"]["eventName"] == "CAPACITY_PROVIDER_STEADY_STATE"]

    detail = wait_for(steady, timeout=10)[0]
    assert detail["capacityProviderArns"] == [provider["capacityProviderArn"]]


def test_with_fargate_on_agents_the_pools_agents_run_fargate_tasks(tmp_path):
    server = Ecsd(tmp_path / "data", ["--fargate-on-agents", "--simulate-agents", "1", "--cluster", "ecsd-fargate"]).start()
    try:
        ecs = server.client()
        wait_for(lambda: instances(ecs, "ecsd-fargate") if ecs.list_clusters()["clusterArns"] else None)
        ecs.create_cluster(clusterName="apps")
        ecs.register_task_definition(
            family="web", networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
            containerDefinitions=[{"name": "app", "image": "nginx:1", "portMappings": [{"containerPort": 80}]}])
        task = ecs.run_task(cluster="apps", taskDefinition="web", launchType="FARGATE", networkConfiguration=WIDE)["tasks"][0]
        ecs.get_waiter("tasks_running").wait(cluster="apps", tasks=[task["taskArn"]], WaiterConfig={"Delay": 1, "MaxAttempts": 30})
        running = ecs.describe_tasks(cluster="apps", tasks=[task["taskArn"]])["tasks"][0]
        assert "containerInstanceArn" not in running and running["launchType"] == "FARGATE"
        # Its containers run in a task of the pool, on the agent's instance, in bridge mode.
        carrier = ecs.describe_tasks(cluster="ecsd-fargate", tasks=[task["taskArn"].rsplit("/", 1)[1]])["tasks"][0]
        assert carrier["startedBy"] == task["taskArn"] and carrier["lastStatus"] == "RUNNING"
        assert carrier["containerInstanceArn"] == instances(ecs, "ecsd-fargate")[0]["containerInstanceArn"]
        binding = running["containers"][0]["networkBindings"][0]
        assert binding["containerPort"] == 80 and binding["hostPort"] > 0
        assert running["containers"][0]["runtimeId"] == carrier["containers"][0]["runtimeId"]
        ecs.stop_task(cluster="apps", task=task["taskArn"], reason="done")
        ecs.get_waiter("tasks_stopped").wait(cluster="apps", tasks=[task["taskArn"]], WaiterConfig={"Delay": 1, "MaxAttempts": 30})
        stopped = ecs.describe_tasks(cluster="apps", tasks=[task["taskArn"]])["tasks"][0]
        assert stopped["stopCode"] == "UserInitiated" and stopped["stoppedReason"] == "done"
        assert stopped["containers"][0]["exitCode"] == 143
        carrier = ecs.describe_tasks(cluster="ecsd-fargate", tasks=[carrier["taskArn"]])["tasks"][0]
        assert carrier["lastStatus"] == "STOPPED"
    finally:
        server.stop()


def test_a_deployment_waits_for_a_protected_task_then_proceeds(ecs):
    old = fargate_service(ecs, 2, WIDE)
    ecs.update_task_protection(cluster="fg", tasks=old[:1], protectionEnabled=True)
    fargate_definition(ecs, cpu="512", memory="1024")
    ecs.update_service(cluster="fg", service="api", taskDefinition="web:2")

    def replaced_but_the_protected():
        arns = ecs.list_tasks(cluster="fg", serviceName="api")["taskArns"]
        tasks = ecs.describe_tasks(cluster="fg", tasks=arns)["tasks"]
        new = [t for t in tasks if t["taskDefinitionArn"].endswith(":2") and t["lastStatus"] == "RUNNING"]
        return len(new) == 2 and set(arns) - {t["taskArn"] for t in new} == {old[0]}

    wait_for(replaced_but_the_protected)
    time.sleep(1)
    service = ecs.describe_services(cluster="fg", services=["api"])["services"][0]
    assert len(service["deployments"]) == 2
    assert service["deployments"][0]["rolloutState"] == "IN_PROGRESS"
    assert old[0] in ecs.list_tasks(cluster="fg", serviceName="api")["taskArns"]
    ecs.update_task_protection(cluster="fg", tasks=old[:1], protectionEnabled=False)
    ecs.get_waiter("services_stable").wait(cluster="fg", services=["api"], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    service = ecs.describe_services(cluster="fg", services=["api"])["services"][0]
    assert service["deployments"][0]["rolloutState"] == "COMPLETED"
    assert old[0] not in ecs.list_tasks(cluster="fg", serviceName="api")["taskArns"]
