"""The web console's doors without a browser: signing in, the session kept in the store (across a
restart, and between processes sharing PostgreSQL), and the refusals of its gate."""

import http.client
import json

import pytest

from conftest import ACCOUNT, REGION, Ecsd, postgres_database


def request(url, method, path, body=None, cookie=None, headers=None):
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    sent = dict(headers or {})
    if cookie:
        sent["Cookie"] = cookie
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=sent)
    response = conn.getresponse()
    answer = json.loads(response.read() or b"{}")
    return response, answer


def sign_in(url, key="test", secret="test", region=REGION):
    response, answer = request(
        url, "POST", "/console/session", {"accessKeyId": key, "secretAccessKey": secret, "region": region}
    )
    if response.status != 200:
        return response, answer, None
    cookie = response.getheader("Set-Cookie").split(";")[0]
    return response, answer, cookie


def call(url, operation, body, cookie, token):
    return request(url, "POST", f"/console/api/{operation}", body, cookie, {"X-Ecsd-Csrf": token})


def test_sign_in_gives_a_session_cookie_and_refuses_wrong_keys(ecsd):
    response, session, cookie = sign_in(ecsd.url)
    assert response.status == 200, session
    attributes = response.getheader("Set-Cookie")
    assert "HttpOnly" in attributes and "SameSite=Strict" in attributes and "Path=/console" in attributes
    assert cookie.startswith(f"ecsd_console={ACCOUNT}.{REGION}.")
    assert session["principal"] == "test" and session["region"] == REGION and len(session["csrfToken"]) == 64

    response, answer, _ = sign_in(ecsd.url, secret="wrong")
    assert (response.status, answer["__type"]) == (400, "UnrecognizedClientException")
    response, answer, _ = sign_in(ecsd.url, region="moon-1")
    assert answer["__type"] == "InvalidParameterException" and "'region'" in answer["message"]
    response, answer = request(ecsd.url, "POST", "/console/session", {"accessKeyId": "test"})
    assert answer["__type"] == "SerializationException"

    # The console's answers are the API's: shapes, errors and all.
    created, answer = call(ecsd.url, "CreateCluster", {"clusterName": "web"}, cookie, session["csrfToken"])
    assert created.status == 200 and answer["cluster"]["clusterName"] == "web"
    missing, answer = call(ecsd.url, "DescribeServices", {"cluster": "web", "services": ["nope"]}, cookie, session["csrfToken"])
    assert answer["failures"][0]["reason"] == "MISSING"
    bad, answer = call(ecsd.url, "CreateCluster", {"clusterName": 7}, cookie, session["csrfToken"])
    assert answer["__type"] == "SerializationException"
    unknown, answer = call(ecsd.url, "FlyToMoon", {}, cookie, session["csrfToken"])
    assert answer["__type"] == "UnknownOperationException"
    assert ecsd.client().describe_clusters(clusters=["web"])["clusters"][0]["status"] == "ACTIVE"


def test_a_session_survives_a_restart_and_ends_at_sign_out(tmp_path):
    server = Ecsd(tmp_path / "data").start()
    try:
        _, session, cookie = sign_in(server.url)
        server.stop()
        server.start()
        response, again = request(server.url, "GET", "/console/session", cookie=cookie)
        assert response.status == 200 and again["csrfToken"] == session["csrfToken"]

        response, answer = request(server.url, "DELETE", "/console/session", cookie=cookie)
        assert answer["__type"] == "AccessDeniedException", "signing out needs the CSRF token too"
        response, _ = request(server.url, "DELETE", "/console/session", cookie=cookie, headers={"X-Ecsd-Csrf": session["csrfToken"]})
        assert response.status == 200 and "Max-Age=0" in response.getheader("Set-Cookie")
        response, answer = call(server.url, "ListClusters", {}, cookie, session["csrfToken"])
        assert (response.status, answer["__type"]) == (403, "MissingAuthenticationTokenException")
    finally:
        server.stop()


def test_processes_sharing_postgresql_know_each_others_sessions(tmp_path):
    store = postgres_database(tmp_path / "shared")
    if store is None:
        pytest.skip("runs in the PostgreSQL pass (ECSD_TEST_POSTGRES)")
    servers = [Ecsd(tmp_path / f"data{i}", store=store).start() for i in range(2)]
    try:
        _, session, cookie = sign_in(servers[0].url)
        response, answer = call(servers[1].url, "CreateCluster", {"clusterName": "shared"}, cookie, session["csrfToken"])
        assert response.status == 200, answer
        assert servers[0].client().describe_clusters(clusters=["shared"])["clusters"][0]["status"] == "ACTIVE"
    finally:
        for s in servers:
            s.stop()
