"""Calls one ECS operation with boto3 for the console tests: `boto_call.py URL OPERATION JSON
[ACCESS_KEY SECRET [REGION]]` prints the answer as JSON, or the error code and message with exit
status 1."""

import json
import sys

import boto3
import botocore.exceptions


def main():
    url, operation, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    key, secret = (sys.argv[4], sys.argv[5]) if len(sys.argv) > 5 else ("test", "test")
    region = sys.argv[6] if len(sys.argv) > 6 else "us-east-1"
    ecs = boto3.client(
        "ecs", endpoint_url=url, region_name=region, aws_access_key_id=key, aws_secret_access_key=secret
    )
    try:
        answer = getattr(ecs, operation)(**params)
    except botocore.exceptions.ClientError as e:
        print(json.dumps({"code": e.response["Error"]["Code"], "message": e.response["Error"]["Message"]}))
        sys.exit(1)
    answer.pop("ResponseMetadata", None)
    print(json.dumps(answer, default=str))


if __name__ == "__main__":
    main()
