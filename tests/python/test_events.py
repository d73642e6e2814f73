"""Events and simulated agents: tasks that really run and stop with no agent but ecsd's own,
and every state change as a durable, ordered stream (JSON pages, Server-Sent Events, webhooks)."""

import http.client
import http.server
import json
import signal
import subprocess
import threading
import time
import urllib.parse

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from conftest import Ecsd, cli_env, ecsd_binary

FAST = {"Delay": 1, "MaxAttempts": 20}
TASK_CHANGE = "ECS Task State Change"
ORDER = ["PROVISIONING", "PENDING", "ACTIVATING", "RUNNING", "DEACTIVATING", "STOPPING", "DEPROVISIONING", "STOPPED"]


def signed_headers(url, path, extra=None):
    request = AWSRequest(method="GET", url=url + path, headers=dict(extra or {}))
    SigV4Auth(Credentials("test", "test"), "ecs", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def events_page(url, **params):
    path = "/events?" + urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", path, headers=signed_headers(url, path))
    response = conn.getresponse()
    body = json.loads(response.read())
    assert response.status == 200, body
    return body


def all_events(url, **params):
    events, after = [], 0
    while True:
        page = events_page(url, after=after, limit=50, **params)
        events.extend(page["events"])
        if not page["events"]:
            return events
        after = page["lastSeq"]


class Stream:
    """A Server-Sent Events connection to /events/stream."""

    def __init__(self, url, last_event_id=None, **params):
        path = "/events/stream" + ("?" + urllib.parse.urlencode(params, quote_via=urllib.parse.quote) if params else "")
        extra = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10)
        self.conn.request("GET", path, headers=signed_headers(url, path, extra))
        self.response = self.conn.getresponse()
        assert self.response.status == 200, self.response.read()

    def next(self):
        seq, data = None, []
        while True:
            line = self.response.readline().decode().rstrip("\n")
            if line.startswith("id:"):
                seq = int(line[3:].strip())
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and seq is not None:
                return seq, json.loads("".join(data))

    def take(self, n):
        return [self.next() for _ in range(n)]

    def close(self):
        self.conn.close()


@pytest.fixture
def simulated(tmp_path):
    server = Ecsd(tmp_path / "data", extra_args=["--simulate-agents", "2", "--tick-millis", "100"]).start()
    ecs = server.client()
    deadline = time.time() + 10
    while True:
        try:
            if len(ecs.list_container_instances()["containerInstanceArns"]) == 2:
                break
        except ecs.exceptions.ClusterNotFoundException:
            pass  # the agents create the cluster when they first register
        assert time.time() < deadline, "the simulated agents did not register"
        time.sleep(0.1)
    yield server
    if server.process.poll() is None:
        server.stop()


def register(ecs, family, labels=None, essential=True, **container):
    definition = {"name": "main", "image": "busybox:1.36", "memory": 64, "essential": essential, **container}
    if labels:
        definition["dockerLabels"] = labels
    ecs.register_task_definition(family=family, containerDefinitions=[definition])


def test_waiters_work_with_simulated_agents(simulated):
    ecs = simulated.client()
    register(ecs, "exits", {"ecsd.simulate.run-seconds": "1", "ecsd.simulate.exit-code": "3"}, portMappings=[{"containerPort": 80}])
    task = ecs.run_task(taskDefinition="exits")["tasks"][0]["taskArn"]
    ecs.get_waiter("tasks_running").wait(tasks=[task], WaiterConfig=FAST)
    running = ecs.describe_tasks(tasks=[task])["tasks"][0]
    assert running["containers"][0]["networkBindings"][0]["containerPort"] == 80
    assert running["containers"][0]["imageDigest"].startswith("sha256:")
    assert "pullStartedAt" in running and "startedAt" in running
    ecs.get_waiter("tasks_stopped").wait(tasks=[task], WaiterConfig=FAST)
    stopped = ecs.describe_tasks(tasks=[task])["tasks"][0]
    assert stopped["stopCode"] == "EssentialContainerExited"
    assert stopped["containers"][0]["exitCode"] == 3
    assert "executionStoppedAt" in stopped

    register(ecs, "forever")
    task = ecs.run_task(taskDefinition="forever")["tasks"][0]["taskArn"]
    ecs.get_waiter("tasks_running").wait(tasks=[task], WaiterConfig=FAST)
    ecs.stop_task(task=task, reason="enough")
    ecs.get_waiter("tasks_stopped").wait(tasks=[task], WaiterConfig=FAST)
    stopped = ecs.describe_tasks(tasks=[task])["tasks"][0]
    assert (stopped["stopCode"], stopped["stoppedReason"]) == ("UserInitiated", "enough")
    assert stopped["containers"][0]["exitCode"] == 143

    register(ecs, "broken", {"ecsd.simulate.pull-error": "manifest unknown"})
    task = ecs.run_task(taskDefinition="broken")["tasks"][0]["taskArn"]
    ecs.get_waiter("tasks_stopped").wait(tasks=[task], WaiterConfig=FAST)
    failed = ecs.describe_tasks(tasks=[task])["tasks"][0]
    assert failed["stopCode"] == "TaskFailedToStart"
    assert failed["stoppedReason"] == "Task failed to start"
    assert failed["containers"][0]["reason"] == "CannotPullContainerError: manifest unknown"
    assert "startedAt" not in failed


def task_versions(events, task_arn):
    return [(seq, e["detail"]["version"], e["detail"]["lastStatus"]) for seq, e in events if e["resources"] == [task_arn]]


def test_the_page_and_the_stream_show_every_transition_once(simulated):
    ecs = simulated.client()
    register(ecs, "short", {"ecsd.simulate.run-seconds": "0.5"})
    task = ecs.run_task(taskDefinition="short")["tasks"][0]["taskArn"]
    ecs.get_waiter("tasks_stopped").wait(tasks=[task], WaiterConfig=FAST)

    page = [(e["seq"], e["event"]) for e in all_events(simulated.url, cluster="default", **{"detail-type": TASK_CHANGE})]
    transitions = task_versions(page, task)
    versions = [v for _, v, _ in transitions]
    assert versions == list(range(1, len(versions) + 1)), transitions
    assert [s for _, _, s in transitions][-1] == "STOPPED"
    statuses = [ORDER.index(s) for _, _, s in transitions]
    assert statuses == sorted(statuses)
    event = page[-1][1]
    assert event["source"] == "aws.ecs" and event["detail-type"] == TASK_CHANGE
    assert event["account"] == "123456789012" and event["region"] == "us-east-1"
    assert event["detail"]["stoppedAt"].endswith("Z")

    everything = [(e["seq"], e["event"]) for e in all_events(simulated.url)]
    stream = Stream(simulated.url)
    first = stream.take(3)
    stream.close()
    resumed = Stream(simulated.url, last_event_id=first[-1][0])
    rest = resumed.take(len(everything) - 3)
    resumed.close()
    assert [s for s, _ in first + rest] == [s for s, _ in everything], "nothing missed, nothing twice"
    assert [e["id"] for _, e in first + rest] == [e["id"] for _, e in everything]


def test_events_are_read_by_the_resource_they_are_about(simulated):
    ecs = simulated.client()
    register(ecs, "short", {"ecsd.simulate.run-seconds": "0.2"})
    first, second = (ecs.run_task(taskDefinition="short")["tasks"][0]["taskArn"] for _ in range(2))
    ecs.get_waiter("tasks_stopped").wait(tasks=[first, second], WaiterConfig=FAST)

    everything = [(e["seq"], e["event"]) for e in all_events(simulated.url)]
    about_first = [(e["seq"], e["event"]) for e in all_events(simulated.url, resource=first)]
    assert about_first == [(seq, e) for seq, e in everything if e["resources"] == [first]]
    assert about_first[-1][1]["detail"]["lastStatus"] == "STOPPED"
    assert all_events(simulated.url, resource=first + "0") == []


def test_a_stream_resumes_across_a_restart(simulated):
    ecs = simulated.client()
    register(ecs, "once", {"ecsd.simulate.run-seconds": "0.3"})
    task = ecs.run_task(taskDefinition="once")["tasks"][0]["taskArn"]
    ecs.get_waiter("tasks_stopped").wait(tasks=[task], WaiterConfig=FAST)
    seen = [e["seq"] for e in all_events(simulated.url)]

    simulated.stop()
    simulated.start()
    ecs = simulated.client()
    stream = Stream(simulated.url, last_event_id=seen[-1], **{"detail-type": TASK_CHANGE})
    second = ecs.run_task(taskDefinition="once")["tasks"][0]["taskArn"]
    ecs.get_waiter("tasks_stopped").wait(tasks=[second], WaiterConfig=FAST)
    later = stream.take(len(task_versions([(e["seq"], e["event"]) for e in all_events(simulated.url)], second)))
    stream.close()
    assert all(seq > seen[-1] for seq, _ in later)
    assert {e["resources"][0] for _, e in later} == {second}
    assert [e["detail"]["version"] for _, e in later] == list(range(1, len(later) + 1))


def test_simulated_agents_pick_their_tasks_back_up_after_a_restart(tmp_path):
    # Tasks reach the simulated agents over ACS; after a restart (server and agents alike) the
    # agents re-register with their identity and take the tasks they held back from the task
    # manifest, so a task started before the restart still exits on time after it.
    server = Ecsd(tmp_path / "data", extra_args=["--simulate-agents", "1", "--tick-millis", "100",
                                                 "--task-manifest-secs", "0.5"]).start()
    try:
        ecs = server.client()
        deadline = time.time() + 10
        while True:
            try:
                if ecs.list_container_instances()["containerInstanceArns"]:
                    break
            except ecs.exceptions.ClusterNotFoundException:
                pass
            assert time.time() < deadline, "the simulated agent did not register"
            time.sleep(0.1)
        register(ecs, "later", {"ecsd.simulate.run-seconds": "4", "ecsd.simulate.exit-code": "7"})
        task = ecs.run_task(taskDefinition="later")["tasks"][0]["taskArn"]
        ecs.get_waiter("tasks_running").wait(tasks=[task], WaiterConfig=FAST)
        server.stop()
        server.start()
        ecs = server.client()
        ecs.get_waiter("tasks_stopped").wait(tasks=[task], WaiterConfig=FAST)
        stopped = ecs.describe_tasks(tasks=[task])["tasks"][0]
        assert stopped["stopCode"] == "EssentialContainerExited"
        assert stopped["containers"][0]["exitCode"] == 7
        instance = ecs.describe_container_instances(
            containerInstances=ecs.list_container_instances()["containerInstanceArns"])["containerInstances"][0]
        assert instance["agentConnected"] is True
    finally:
        if server.process.poll() is None:
            server.stop()


class Receiver(http.server.BaseHTTPRequestHandler):
    failures_left = 3
    received = []
    lock = threading.Lock()

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with Receiver.lock:
            if Receiver.failures_left > 0:
                Receiver.failures_left -= 1
                self.send_response(500)
            else:
                Receiver.received.append((int(self.headers["X-Ecsd-Event-Seq"]), body))
                self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhooks_get_every_event_in_order_despite_failures(tmp_path):
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hooks = tmp_path / "hooks.toml"
    hooks.write_text(f'[[webhooks]]\nname = "test"\nurl = "http://127.0.0.1:{receiver.server_port}/hook"\n')
    server = Ecsd(tmp_path / "data", extra_args=["--webhooks", str(hooks)]).start()
    try:
        ecs = server.client()
        ecs.create_cluster(clusterName="hooked")
        ecs.register_container_instance(
            cluster="hooked",
            totalResources=[{"name": "CPU", "type": "INTEGER", "integerValue": 1024},
                            {"name": "MEMORY", "type": "INTEGER", "integerValue": 1024}],
        )
        register(ecs, "hooked")
        task = ecs.run_task(cluster="hooked", taskDefinition="hooked")["tasks"][0]["taskArn"]
        for status in ("RUNNING", "STOPPED"):
            ecs.submit_task_state_change(cluster="hooked", task=task, status=status)
        expected = [e["seq"] for e in all_events(server.url)]
        deadline = time.time() + 20
        while len(Receiver.received) < len(expected):
            assert time.time() < deadline, (Receiver.received, expected)
            time.sleep(0.1)
        assert [seq for seq, _ in Receiver.received] == expected
        assert Receiver.received[-1][1]["detail"]["lastStatus"] == "STOPPED"

        # The delivery cursor survives a restart: nothing is sent twice.
        server.stop()
        server.start()
        server.client().stop_task(cluster="hooked", task=task)
        time.sleep(1)
        assert [seq for seq, _ in Receiver.received] == expected
    finally:
        server.stop()
        receiver.shutdown()


def test_stopped_tasks_are_swept_after_their_retention(tmp_path):
    server = Ecsd(
        tmp_path / "data", extra_args=["--stopped-task-retention-minutes", "0", "--sweep-interval-secs", "0.2"]
    ).start()
    try:
        ecs = server.client()
        ecs.create_cluster()
        ecs.register_container_instance(
            totalResources=[{"name": "CPU", "type": "INTEGER", "integerValue": 1024},
                            {"name": "MEMORY", "type": "INTEGER", "integerValue": 1024}],
        )
        register(ecs, "brief")
        task = ecs.run_task(taskDefinition="brief")["tasks"][0]["taskArn"]
        running = ecs.run_task(taskDefinition="brief")["tasks"][0]["taskArn"]
        ecs.submit_task_state_change(task=task, status="STOPPED")
        time.sleep(1)
        described = ecs.describe_tasks(tasks=[task, running])
        assert [f["reason"] for f in described["failures"]] == ["MISSING"]
        assert [t["taskArn"] for t in described["tasks"]] == [running]
    finally:
        server.stop()


def tail_lines(args, count, timeout=30):
    """The first `count` lines `ecsd events tail ARGS` prints (fails rather than waits forever)."""
    tail = subprocess.Popen([ecsd_binary(), "events", "tail", *args], stdout=subprocess.PIPE, text=True, env=cli_env())
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(tail.stdout.readline().rstrip("\n") for _ in range(count)))
    reader.start()
    reader.join(timeout)
    tail.kill()
    reader.join()
    assert len(lines) == count, f"tail printed {lines}"
    return lines


def test_events_tail_prints_a_line_per_event(simulated):
    ecs = simulated.client()
    register(ecs, "tailed", {"ecsd.simulate.run-seconds": "0.2"})
    task = ecs.run_task(taskDefinition="tailed")["tasks"][0]["taskArn"]
    ecs.get_waiter("tasks_stopped").wait(tasks=[task], WaiterConfig=FAST)
    count = len(all_events(simulated.url))
    lines = tail_lines(["--endpoint", simulated.url, "--from-start"], count)
    assert [int(line.split("\t")[0]) for line in lines] == list(range(1, count + 1))
    assert lines[-1].split("\t")[3] == task and "STOPPED" in lines[-1]


def test_events_tail_starts_from_now_and_filters_by_kind(simulated):
    ecs = simulated.client()
    register(ecs, "later", {"ecsd.simulate.run-seconds": "0.2"})
    before = events_page(simulated.url, after=0, limit=1000)["lastSeq"]
    assert before > 0, "events happened before the tail starts"
    task = {}

    def run_soon():
        time.sleep(1.5)
        task["arn"] = ecs.run_task(taskDefinition="later")["tasks"][0]["taskArn"]

    threading.Thread(target=run_soon).start()
    lines = tail_lines(["--endpoint", simulated.url, "--detail-type", TASK_CHANGE], 2)
    assert all(int(line.split("\t")[0]) > before for line in lines), lines
    assert all(line.split("\t")[2] == TASK_CHANGE and line.split("\t")[3] == task["arn"] for line in lines), lines


def test_unsigned_event_reads_are_refused(simulated):
    host, port = simulated.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("GET", "/events")
    response = conn.getresponse()
    assert response.status == 403
    assert json.loads(response.read())["__type"] == "MissingAuthenticationTokenException"


def test_an_event_query_that_does_not_parse_is_the_apis_error(simulated):
    host, port = simulated.url.removeprefix("http://").split(":")
    for path in ["/events?after=abc", "/events/stream?limit=-1"]:
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("GET", path, headers=signed_headers(simulated.url, path))
        response = conn.getresponse()
        body = json.loads(response.read())
        assert (response.status, body["__type"]) == (400, "InvalidParameterException"), body
        assert "Invalid query" in body["message"]


def test_a_simulated_agent_keeps_its_identity_across_restarts(ecsd, tmp_path):
    state = tmp_path / "agent.json"
    command = [ecsd_binary(), "agent", "--endpoint", ecsd.url, "--instances", "2", "--state-file", str(state),
               "--cluster", "fleet"]
    ecs = ecsd.client()

    def instances():
        try:
            arns = ecs.list_container_instances(cluster="fleet")["containerInstanceArns"]
        except ecs.exceptions.ClusterNotFoundException:
            return []
        if not arns:
            return []
        return ecs.describe_container_instances(cluster="fleet", containerInstances=arns)["containerInstances"]

    def wait_until(condition):
        deadline = time.time() + 10
        while not condition(instances()):
            assert time.time() < deadline, instances()
            time.sleep(0.1)

    seen = []
    for _ in range(2):
        agent = subprocess.Popen(command, env=cli_env(), stderr=subprocess.DEVNULL)
        try:
            # Registered and connected over ACS.
            wait_until(lambda found: len(found) == 2 and all(i["agentConnected"] for i in found))
            seen.append({i["containerInstanceArn"]: i for i in instances()})
        finally:
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(timeout=10) == 0
        wait_until(lambda found: len(found) == 2 and not any(i["agentConnected"] for i in found))
    first, second = seen
    assert sorted(first) == sorted(second) == sorted(json.loads(state.read_text())["instances"])
    for arn, instance in second.items():
        assert instance["registeredAt"] == first[arn]["registeredAt"]
        assert instance["version"] > first[arn]["version"]
