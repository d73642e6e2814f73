"""Raw ECS API requests signed with SigV4 by botocore, for bodies no SDK would send."""

import json
import urllib.error
import urllib.request

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

TARGET = "AmazonEC2ContainerServiceV20141113."


def send(url, operation, body, content_type="application/x-amz-json-1.1", sign=True, timeout=30):
    """POSTs `body` (bytes or str) as `operation`; returns (status, headers, parsed JSON or None)."""
    if isinstance(body, str):
        body = body.encode()
    headers = {"Content-Type": content_type}
    if operation is not None:
        headers["X-Amz-Target"] = TARGET + operation
    request = AWSRequest(method="POST", url=url + "/", data=body, headers=headers)
    if sign:
        SigV4Auth(Credentials("test", "test"), "ecs", "us-east-1").add_auth(request)
    prepared = urllib.request.Request(url + "/", data=body, method="POST", headers=dict(request.headers.items()))
    try:
        with urllib.request.urlopen(prepared, timeout=timeout) as response:
            status, answer_headers, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, answer_headers, raw = error.code, dict(error.headers), error.read()
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    return status, {k.lower(): v for k, v in answer_headers.items()}, parsed
