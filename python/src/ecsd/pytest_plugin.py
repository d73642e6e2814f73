"""The `ecsd` pytest fixture, registered through the `pytest11` entry point: installing the
wheel is enough. Each test that asks for `ecsd` gets a server of its own, started on a free
loopback port with a fresh data directory and stopped after the test:

    @pytest.mark.ecsd(simulate_agents=2)
    def test_tasks_run(ecsd):
        ecsd.ecs.run_task(taskDefinition="web")

The marker's keywords are `ecsd serve` options (`simulate_agents=2` is `--simulate-agents 2`).
"""

import pytest

from ecsd import Server


class Running:
    """What a test gets: the server's `endpoint_url` and `region`, and `ecs`, a boto3 ECS
    client of it (None when boto3 is not installed)."""

    def __init__(self, server):
        self.server = server
        self.endpoint_url = server.endpoint_url
        self.region = server.region
        try:
            self.ecs = server.client("ecs")
        except ImportError:
            self.ecs = None

    def client(self, service="ecs"):
        return self.server.client(service)


def pytest_configure(config):
    config.addinivalue_line("markers", "ecsd(**options): `ecsd serve` options for the ecsd fixture")


@pytest.fixture
def ecsd(request, tmp_path):
    marker = request.node.get_closest_marker("ecsd")
    settings = dict(marker.kwargs) if marker else {}
    server = Server(data_dir=tmp_path / "ecsd-data", **settings).start()
    try:
        yield Running(server)
    finally:
        server.stop()
