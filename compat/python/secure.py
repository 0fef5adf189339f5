#!/usr/bin/env python3
"""Drive a tasklane that requires an API token (and maybe TLS) with the official Python client.

Usage: secure.py --endpoint HOST:PORT --transport grpc|rest --token TOKEN [--root CERT.pem] --project ID

The client authenticates the way docs/clients.md shows: over gRPC with the token as call
credentials (on TLS with the given root, or on a local plaintext channel), over REST with
the token as OAuth2 credentials. Checks that a call without the token is refused with
UNAUTHENTICATED and that queues and tasks work with it. Prints a JSON record; exits
non-zero with the failed step on the first wrong answer.
"""

import argparse
import json
import os
import sys

os.environ["NO_GCE_CHECK"] = "true"
os.environ.pop("GOOGLE_APPLICATION_CREDENTIALS", None)

import google.auth.exceptions  # noqa: E402
import grpc  # noqa: E402
from google.api_core import exceptions  # noqa: E402
from google.api_core.client_options import ClientOptions  # noqa: E402
from google.auth.credentials import AnonymousCredentials  # noqa: E402
from google.cloud import tasks_v2  # noqa: E402
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport  # noqa: E402
from google.oauth2.credentials import Credentials  # noqa: E402

RECORD = []


def check(step, condition, detail):
    if not condition:
        print(f"FAILED at {step}: {detail}", file=sys.stderr)
        sys.exit(1)
    RECORD.append(step)


def grpc_client(endpoint, token, root):
    if root:
        channel_creds = grpc.ssl_channel_credentials(root_certificates=open(root, "rb").read())
    else:
        # Call credentials need a secure channel; a loopback one counts as local.
        channel_creds = grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)
    if token:
        channel_creds = grpc.composite_channel_credentials(channel_creds, grpc.access_token_call_credentials(token))
    options = [("grpc.ssl_target_name_override", "localhost")] if root else []
    channel = grpc.secure_channel(endpoint, channel_creds, options=options)
    return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))


def rest_client(endpoint, token, root):
    if root:
        os.environ["REQUESTS_CA_BUNDLE"] = root
    scheme = "https" if root else "http"
    credentials = Credentials(token) if token else AnonymousCredentials()
    return tasks_v2.CloudTasksClient(
        credentials=credentials,
        transport="rest",
        client_options=ClientOptions(api_endpoint=f"{scheme}://{endpoint}"),
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--transport", choices=["grpc", "rest"], required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--root")
    parser.add_argument("--project", required=True)
    args = parser.parse_args()
    make = grpc_client if args.transport == "grpc" else rest_client
    parent = f"projects/{args.project}/locations/here"

    # Over REST the library answers a 401 by refreshing its credentials, which fixed
    # tokens cannot do: that refusal is how a 401 shows there.
    for step, token, words in [
        ("without a token", None, "authentication credential"),
        ("a wrong token", "tlk_wrong", "invalid authentication credentials"),
    ]:
        try:
            make(args.endpoint, token, args.root).list_queues(parent=parent)
            check(f"{step}: refused", False, "the call succeeded")
        except exceptions.Unauthenticated as e:
            check(f"{step}: UNAUTHENTICATED", words in e.message, e.message)
        except google.auth.exceptions.GoogleAuthError as e:
            check(f"{step}: UNAUTHENTICATED", args.transport == "rest", repr(e))

    client = make(args.endpoint, args.token, args.root)
    queue = client.create_queue(parent=parent, queue=tasks_v2.Queue(name=f"{parent}/queues/secure-{args.transport}"))
    check("create a queue with the token", queue.name.endswith(f"secure-{args.transport}"), queue.name)
    client.pause_queue(name=queue.name)
    task = client.create_task(
        parent=queue.name,
        task=tasks_v2.Task(http_request=tasks_v2.HttpRequest(url="http://127.0.0.1:9/work", body=b"hi")),
    )
    check("create a task", task.name.startswith(queue.name + "/tasks/"), task.name)
    listed = [q.name for q in client.list_queues(parent=parent)]
    check("list queues", queue.name in listed, listed)
    fetched = client.get_task(name=task.name)
    check("get the task", fetched.name == task.name, fetched.name)
    print(json.dumps({"passed": RECORD}))


if __name__ == "__main__":
    main()
