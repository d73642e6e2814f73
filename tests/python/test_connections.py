"""An agent's connection outlives nothing: when the ecsd process that held it dies (SIGKILL, so
it records nothing), the instance reads `agentConnected: false` and its tasks `DISCONNECTED`
within a few heartbeats — on the same store restarted, and on another process sharing
PostgreSQL. The agent is ecsd's simulated agent, frozen with SIGSTOP so that it cannot
reconnect."""

import os
import signal
import subprocess
import time

import pytest

from conftest import REGION, Ecsd, ecsd_binary, postgres_database

HEARTBEAT = 0.5
# The lease lasts three heartbeats past its last renewal, and is looked at every heartbeat; the
# rest is room for a busy machine.
BOUND = 3 * HEARTBEAT + HEARTBEAT + 8.0
CHANNEL_ARGS = ["--agent-heartbeat-secs", str(HEARTBEAT)]

needs_postgres = pytest.mark.skipif(not os.environ.get("ECSD_TEST_POSTGRES"), reason="runs against PostgreSQL")


def wait_for(what, check, timeout=30.0):
    deadline = time.time() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def start_agent(url):
    env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION=REGION)
    return subprocess.Popen(
        [ecsd_binary(), "agent", "--endpoint", url, "--instances", "1", "--cluster", "edge"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def instance_of(ecs):
    arns = ecs.list_container_instances(cluster="edge")["containerInstanceArns"]
    if not arns:
        return None
    return ecs.describe_container_instances(cluster="edge", containerInstances=arns)["containerInstances"][0]


def connect_and_run(ecs, url):
    """A simulated agent connected through `url`, holding a RUNNING task."""
    agent = start_agent(url)
    instance = wait_for("the agent to connect", lambda: (i := instance_of(ecs)) and i["agentConnected"] and i)
    ecs.register_task_definition(family="hold", containerDefinitions=[{"name": "c", "image": "busybox", "memory": 32}])
    task = ecs.run_task(cluster="edge", taskDefinition="hold")["tasks"][0]["taskArn"]
    wait_for(
        "the task to run",
        lambda: ecs.describe_tasks(cluster="edge", tasks=[task])["tasks"][0].get("connectivity") == "CONNECTED",
    )
    return agent, instance["containerInstanceArn"], task


def wait_released(ecs, instance, task):
    """Waits (at most BOUND) until the instance and its task read as disconnected."""

    def released():
        described = ecs.describe_container_instances(cluster="edge", containerInstances=[instance])
        connected = described["containerInstances"][0]["agentConnected"]
        connectivity = ecs.describe_tasks(cluster="edge", tasks=[task])["tasks"][0]["connectivity"]
        return not connected and connectivity == "DISCONNECTED"

    wait_for("the connection of the dead process to be released", released, timeout=BOUND)


def end(agent):
    agent.send_signal(signal.SIGCONT)
    agent.kill()
    agent.wait(timeout=10)


def test_a_restarted_server_releases_the_connections_its_killed_self_held(tmp_path):
    server = Ecsd(tmp_path / "data", extra_args=CHANNEL_ARGS).start()
    ecs = server.client()
    ecs.create_cluster(clusterName="edge")
    agent, instance, task = connect_and_run(ecs, server.url)
    try:
        agent.send_signal(signal.SIGSTOP)
        server.stop(signal.SIGKILL)
        server.start()
        ecs = server.client()
        wait_released(ecs, instance, task)
        # Released once: the instance's version moved by exactly one for it, and it stays so.
        before = ecs.describe_container_instances(cluster="edge", containerInstances=[instance])
        time.sleep(3 * HEARTBEAT)
        after = ecs.describe_container_instances(cluster="edge", containerInstances=[instance])
        assert before["containerInstances"][0]["version"] == after["containerInstances"][0]["version"]
        assert after["containerInstances"][0]["agentConnected"] is False
    finally:
        end(agent)
        server.stop(signal.SIGKILL)


@needs_postgres
def test_a_surviving_process_releases_the_connections_a_killed_one_held(tmp_path):
    store = postgres_database(tmp_path / "shared")
    holder = Ecsd(tmp_path / "a", extra_args=CHANNEL_ARGS, store=store).start()
    survivor = Ecsd(tmp_path / "b", extra_args=CHANNEL_ARGS, store=store).start()
    ecs = survivor.client()
    ecs.create_cluster(clusterName="edge")
    agent, instance, task = connect_and_run(ecs, holder.url)
    try:
        # The survivor leaves a live holder's connection alone.
        time.sleep(6 * HEARTBEAT)
        described = ecs.describe_container_instances(cluster="edge", containerInstances=[instance])
        assert described["containerInstances"][0]["agentConnected"] is True
        agent.send_signal(signal.SIGSTOP)
        holder.stop(signal.SIGKILL)
        wait_released(ecs, instance, task)
    finally:
        end(agent)
        survivor.stop()
