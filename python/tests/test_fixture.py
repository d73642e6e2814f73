"""The wheel's pytest plugin, as a user of the wheel meets it: nothing but the `ecsd` fixture,
found through the `pytest11` entry point once the wheel is installed."""

import shutil
import time
import urllib.request

import pytest

import ecsd as package


def test_the_fixture_serves_the_ecs_api(ecsd):
    assert ecsd.region == "us-east-1"
    assert ecsd.endpoint_url.startswith("http://127.0.0.1:")
    ecsd.ecs.create_cluster(clusterName="ci")
    assert ecsd.ecs.describe_clusters(clusters=["ci"])["clusters"][0]["status"] == "ACTIVE"
    with urllib.request.urlopen(ecsd.endpoint_url + "/health") as answer:
        assert answer.status == 200


def test_each_test_gets_a_fresh_server(ecsd):
    assert ecsd.ecs.list_clusters()["clusterArns"] == []


def instances(ecsd, cluster):
    """The cluster's container instances; none while the simulated agents have yet to create it."""
    try:
        return ecsd.ecs.list_container_instances(cluster=cluster)["containerInstanceArns"]
    except ecsd.ecs.exceptions.ClusterNotFoundException:
        return []


@pytest.mark.ecsd(simulate_agents=2, cluster="fleet")
def test_the_marker_passes_serve_options(ecsd):
    deadline = time.time() + 30
    while len(instances(ecsd, "fleet")) < 2:
        assert time.time() < deadline, "two simulated agents join the cluster the marker names"
        time.sleep(0.2)
    ecsd.ecs.register_task_definition(
        family="job",
        containerDefinitions=[{"name": "c", "image": "busybox", "memory": 64,
                               "dockerLabels": {"ecsd.simulate.run-seconds": "30"}}],
    )
    task = ecsd.ecs.run_task(cluster="fleet", taskDefinition="job")["tasks"][0]["taskArn"]
    ecsd.ecs.get_waiter("tasks_running").wait(cluster="fleet", tasks=[task], WaiterConfig={"Delay": 1, "MaxAttempts": 30})


def test_the_command_is_installed_with_the_wheel():
    assert package.binary() == shutil.which("ecsd") or package.binary().endswith("/ecsd")


def test_a_server_that_cannot_start_says_why(tmp_path):
    with pytest.raises(RuntimeError, match="unknown key 'bogus'"):
        (tmp_path / "bad.toml").write_text("bogus = 1\n")
        package.Server(data_dir=tmp_path / "d", config=tmp_path / "bad.toml").start()
