"""Several ecsd processes on one PostgreSQL database, and crashes: no lost update, no
overcommitted instance, no gap in any task's versions, and every acknowledged change still there
after a SIGKILL, on both stores."""

import os
import random
import signal
import threading
import time

import botocore.exceptions
import pytest

from conftest import Ecsd, postgres_database
from test_events import all_events
from test_lifecycle import register_instance, resource

ORDER = ["PROVISIONING", "PENDING", "RUNNING", "STOPPED"]
TASK_CPU, TASK_MEMORY = 256, 256

needs_postgres = pytest.mark.skipif(not os.environ.get("ECSD_TEST_POSTGRES"), reason="runs against PostgreSQL")


def setup_fleet(ecs, instances):
    ecs.create_cluster(clusterName="shared")
    arns = [register_instance(ecs, "shared", cpu=1024, memory=1024) for _ in range(instances)]
    ecs.register_task_definition(
        family="unit", containerDefinitions=[{"name": "c", "image": "i", "cpu": TASK_CPU, "memory": TASK_MEMORY}]
    )
    return arns


def check_invariants(ecs, server_url, instances):
    """Every instance holds exactly what its unstopped tasks hold; every task's versions run
    1, 2, 3… in the event log without a gap; statuses in the log never go backwards."""
    described = ecs.describe_container_instances(cluster="shared", containerInstances=instances)["containerInstances"]
    holding = {}
    for status in ("RUNNING", "STOPPED"):
        for page in ecs.get_paginator("list_tasks").paginate(cluster="shared", desiredStatus=status):
            for chunk in range(0, len(page["taskArns"]), 100):
                arns = page["taskArns"][chunk:chunk + 100]
                for task in ecs.describe_tasks(cluster="shared", tasks=arns)["tasks"]:
                    if task["lastStatus"] != "STOPPED":
                        holding.setdefault(task["containerInstanceArn"], []).append(task)
    for instance in described:
        held = holding.get(instance["containerInstanceArn"], [])
        assert resource(instance, "CPU")["integerValue"] == 1024 - TASK_CPU * len(held) >= 0
        assert resource(instance, "MEMORY")["integerValue"] == 1024 - TASK_MEMORY * len(held) >= 0
    versions = {}
    for entry in all_events(server_url, **{"detail-type": "ECS Task State Change"}):
        detail = entry["event"]["detail"]
        versions.setdefault(detail["taskArn"], []).append((detail["version"], detail["lastStatus"]))
    for task, seen in versions.items():
        assert [v for v, _ in seen] == list(range(1, len(seen) + 1)), (task, seen)
        assert [ORDER.index(s) for _, s in seen] == sorted(ORDER.index(s) for _, s in seen), (task, seen)
    return versions


@needs_postgres
def test_two_processes_share_one_database(tmp_path):
    store = postgres_database(tmp_path / "shared")
    servers = [Ecsd(tmp_path / f"data{i}", store=store).start() for i in range(2)]
    try:
        clients = [s.client() for s in servers]
        instances = setup_fleet(clients[0], 8)
        acknowledged = {}  # task → the highest status a 2xx acknowledged
        lock = threading.Lock()
        deadline = time.time() + 6

        def agent(seed):
            rng = random.Random(seed)
            while time.time() < deadline:
                ecs = rng.choice(clients)
                with lock:
                    mine = [t for t, s in acknowledged.items() if s != "STOPPED"]
                try:
                    if rng.random() < 0.35 or not mine:
                        for task in ecs.run_task(cluster="shared", taskDefinition="unit", count=rng.randint(1, 3))["tasks"]:
                            with lock:
                                acknowledged.setdefault(task["taskArn"], "PENDING")
                    elif rng.random() < 0.15:
                        ecs.stop_task(cluster="shared", task=rng.choice(mine))
                    else:
                        task = rng.choice(mine)
                        status = rng.choice(["RUNNING", "RUNNING", "STOPPED"])
                        ecs.submit_task_state_change(cluster="shared", task=task, status=status)
                        with lock:
                            if ORDER.index(status) > ORDER.index(acknowledged[task]):
                                acknowledged[task] = status
                except botocore.exceptions.ClientError as error:
                    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 400, error

        threads = [threading.Thread(target=agent, args=(seed,)) for seed in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(acknowledged) > 20
        for server in servers:
            versions = check_invariants(server.client(), server.url, instances)
        for task, status in acknowledged.items():
            assert versions[task][-1][1] == status, (task, versions[task], status)
        # Each process sees what the other wrote.
        a = clients[0].list_tasks(cluster="shared", desiredStatus="STOPPED")["taskArns"]
        b = clients[1].list_tasks(cluster="shared", desiredStatus="STOPPED")["taskArns"]
        assert a == b
    finally:
        for server in servers:
            server.stop()


def crash_and_check(server):
    """Drives load, SIGKILLs the server at random moments and checks that every acknowledged
    change survived."""
    rng = random.Random(11)
    ecs = server.client()
    instances = setup_fleet(ecs, 3)
    acknowledged = {}
    for _ in range(4):
        stop_at = time.time() + rng.uniform(0.5, 1.5)
        killer = threading.Timer(stop_at - time.time(), lambda: server.process.send_signal(signal.SIGKILL))
        killer.start()
        try:
            while True:
                mine = [t for t, s in acknowledged.items() if s != "STOPPED"]
                if rng.random() < 0.4 or not mine:
                    for task in ecs.run_task(cluster="shared", taskDefinition="unit")["tasks"]:
                        acknowledged[task["taskArn"]] = "PENDING"
                else:
                    task = rng.choice(mine)
                    status = rng.choice(["RUNNING", "STOPPED"])
                    ecs.submit_task_state_change(cluster="shared", task=task, status=status)
                    if ORDER.index(status) > ORDER.index(acknowledged[task]):
                        acknowledged[task] = status
        except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionClosedError,
                botocore.exceptions.ReadTimeoutError):
            pass
        killer.join()
        server.process.wait(timeout=10)
        server.start()
        ecs = server.client()
        described = {}
        arns = list(acknowledged)
        for i in range(0, len(arns), 100):
            for task in ecs.describe_tasks(cluster="shared", tasks=arns[i:i + 100])["tasks"]:
                described[task["taskArn"]] = task["lastStatus"]
        for task, status in acknowledged.items():
            assert task in described, f"acknowledged task {task} was lost"
            assert ORDER.index(described[task]) >= ORDER.index(status), (task, described[task], status)
        check_invariants(ecs, server.url, instances)
    return len(acknowledged)


def test_sigkill_loses_no_acknowledged_change_sqlite(tmp_path):
    server = Ecsd(tmp_path / "data")
    server.store = None  # the embedded store, whichever store the rest of the suite uses
    server.start()
    try:
        assert crash_and_check(server) > 5
    finally:
        if server.process.poll() is None:
            server.stop()


@needs_postgres
def test_sigkill_loses_no_acknowledged_change_postgres(tmp_path):
    server = Ecsd(tmp_path / "data", store=postgres_database(tmp_path / "crash")).start()
    try:
        assert crash_and_check(server) > 5
    finally:
        if server.process.poll() is None:
            server.stop()
