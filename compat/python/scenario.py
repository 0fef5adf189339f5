#!/usr/bin/env python3
"""Drive a running tasklane with the official Python client, google-cloud-tasks.

Usage: scenario.py --endpoint 127.0.0.1:PORT --transport grpc|rest --project ID

Every step asserts what a Cloud Tasks user relies on, and is recorded with its result in
a form that does not depend on the transport or the project, so the caller can check
that gRPC and REST gave the same answers. Prints the record as JSON on success; exits
non-zero with the failed step on the first wrong answer.
"""

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The Google libraries must never look for a cloud metadata server from this machine.
os.environ["NO_GCE_CHECK"] = "true"
os.environ.pop("GOOGLE_APPLICATION_CREDENTIALS", None)

import grpc  # noqa: E402
import jwt  # noqa: E402
from google.api_core import exceptions  # noqa: E402
from google.api_core.client_options import ClientOptions  # noqa: E402
from google.auth.credentials import AnonymousCredentials  # noqa: E402
from google.cloud import tasks_v2  # noqa: E402
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport  # noqa: E402
from google.protobuf import duration_pb2, field_mask_pb2  # noqa: E402

RECORD = []
PROJECT = ""


def record(step, value):
    RECORD.append({"step": step, "value": value})


def check(step, condition, detail):
    if not condition:
        print(f"FAILED at {step}: {detail}", file=sys.stderr)
        print(json.dumps(RECORD, indent=1), file=sys.stderr)
        sys.exit(1)


def status_of(e):
    """The canonical code name and the server's message, the same over both transports."""
    response = getattr(e, "response", None)
    if response is not None and hasattr(response, "json"):
        body = response.json()["error"]
        return body["status"], body["message"]
    return e.grpc_status_code.name, e.message


def expect_error(step, code, call, message=None):
    try:
        call()
    except exceptions.GoogleAPICallError as e:
        got, text = status_of(e)
        record(step, {"error": got, "message": text.replace(PROJECT, "PROJECT")})
        check(step, got == code, f"expected {code}, got {got}: {text}")
        if message is not None:
            check(step, message in text, f"expected the message to contain {message!r}, got {text!r}")
        return
    check(step, False, f"expected {code}, the call succeeded")


def eventually(probe, timeout=10.0):
    """The first truthy answer of `probe`, asked every 20 ms until `timeout`; else None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.02)
    return None


class Worker:
    """A local HTTP worker that records every request it gets."""

    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        worker = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with worker.lock:
                    worker.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                # Paths under /fail answer 500, so an attempt's recorded status can be seen.
                self.send_response(500 if self.path.startswith("/fail") else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, path, timeout=10.0):
        def arrived():
            with self.lock:
                return next((r for r in self.requests if r["path"] == path), None)
        found = eventually(arrived, timeout)
        check(f"delivery of {path}", found is not None, "the worker never received it")
        return found


def make_client(endpoint, transport):
    if transport == "grpc":
        channel = grpc.insecure_channel(endpoint)
        return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
    return tasks_v2.CloudTasksClient(
        credentials=AnonymousCredentials(),
        transport="rest",
        client_options=ClientOptions(api_endpoint=f"http://{endpoint}"),
    )


def short(name):
    """A resource name without its project, so both transports record the same thing."""
    return name.split("/queues/", 1)[1] if "/queues/" in name else name


def run(client, project, worker, endpoint):
    location = f"projects/{project}/locations/here"
    q = f"{location}/queues/compat"

    # Queues: create, get, list, update, pause, resume.
    created = client.create_queue(parent=location, queue={"name": q})
    record("create_queue", {"name": short(created.name), "state": created.state.name,
                            "rate": created.rate_limits.max_dispatches_per_second,
                            "burst": created.rate_limits.max_burst_size,
                            "max_attempts": created.retry_config.max_attempts})
    check("create_queue", created.state == tasks_v2.Queue.State.RUNNING, created)
    # Cloud Tasks' documented defaults: 500/s, a burst of 100 (rate / 5), 1000 at once, 100 attempts.
    check("create_queue defaults", (created.rate_limits.max_dispatches_per_second, created.rate_limits.max_burst_size,
                                    created.rate_limits.max_concurrent_dispatches, created.retry_config.max_attempts)
          == (500, 100, 1000, 100), created)
    expect_error("create_queue twice", "ALREADY_EXISTS", lambda: client.create_queue(parent=location, queue={"name": q}))
    got = client.get_queue(name=q)
    check("get_queue", got == created, got)
    updated = client.update_queue(
        queue={"name": q, "rate_limits": {"max_dispatches_per_second": 5}},
        update_mask=field_mask_pb2.FieldMask(paths=["rate_limits.max_dispatches_per_second"]),
    )
    record("update_queue", {"rate": updated.rate_limits.max_dispatches_per_second,
                            "burst": updated.rate_limits.max_burst_size,
                            "concurrency": updated.rate_limits.max_concurrent_dispatches})
    check("update_queue", updated.rate_limits.max_dispatches_per_second == 5, updated)
    # The burst follows the rate (max(10, rate / 5)); the concurrency keeps its default.
    check("update_queue derived", (updated.rate_limits.max_burst_size, updated.rate_limits.max_concurrent_dispatches)
          == (10, 1000), updated)
    paused = client.pause_queue(name=q)
    check("pause_queue", paused.state == tasks_v2.Queue.State.PAUSED, paused)
    client.create_queue(parent=location, queue={"name": f"{location}/queues/other"})
    names = [short(x.name) for x in client.list_queues(parent=location)]
    record("list_queues", names)
    check("list_queues", names == ["compat", "other"], names)
    paused_only = [short(x.name) for x in client.list_queues(request={"parent": location, "filter": "state: PAUSED"})]
    record("list_queues state: PAUSED", paused_only)
    check("list_queues filter", paused_only == ["compat"], paused_only)
    # The real service's filter language: comparisons, presence, combinations, and its errors.
    filters = {
        "rate_limits.max_dispatches_per_second < 10": ["compat"],
        "name: OTHER": ["other"],
        "state: PAUSED OR rate_limits.max_dispatches_per_second > 100": ["compat", "other"],
        "NOT state: PAUSED AND retry_config.max_attempts = 100": ["other"],
        "http_target: *": [],
    }
    for text, want in filters.items():
        got = [short(x.name) for x in client.list_queues(request={"parent": location, "filter": text})]
        record(f"list_queues {text}", got)
        check(f"list_queues {text}", got == want, got)
    expect_error("list_queues unknown field", "INVALID_ARGUMENT",
                 lambda: list(client.list_queues(request={"parent": location, "filter": "bogus_field: 1"})),
                 "Field not found: 'bogus_field'.")
    expect_error("list_queues wrong type", "INVALID_ARGUMENT",
                 lambda: list(client.list_queues(request={"parent": location, "filter": "state: BOGUS"})),
                 "The value 'bogus' is of incorrect type.")

    # Tasks on the paused queue: nothing is delivered while we look at them.
    for i in range(5):
        client.create_task(parent=q, task={
            "name": f"{q}/tasks/t{i}",
            "http_request": {"url": f"{worker.url}/paged/{i}", "body": b"payload-%d" % i,
                             "headers": {"X-Custom": "yes"}},
        })
    anonymous = client.create_task(parent=q, task={"http_request": {"url": f"{worker.url}/anonymous"}})
    task_id = anonymous.name.rsplit("/", 1)[1]
    check("create_task without a name", task_id.isdigit() and anonymous.name.startswith(f"{q}/tasks/"), anonymous.name)
    record("create_task without a name", {"generated_id_is_numeric": task_id.isdigit()})
    basic = client.get_task(name=f"{q}/tasks/t0")
    full = client.get_task(request={"name": f"{q}/tasks/t0", "response_view": tasks_v2.Task.View.FULL})
    record("get_task views", {"basic_body": basic.http_request.body.decode(), "full_body": full.http_request.body.decode(),
                              "basic_view": basic.view.name, "full_view": full.view.name,
                              "method": full.http_request.http_method.name,
                              "headers": dict(full.http_request.headers)})
    check("get_task BASIC", basic.http_request.body == b"" and basic.view == tasks_v2.Task.View.BASIC, basic)
    check("get_task FULL", full.http_request.body == b"payload-0" and full.view == tasks_v2.Task.View.FULL, full)
    pages = [len(page.tasks) for page in client.list_tasks(request={"parent": q, "page_size": 2}).pages]
    record("list_tasks pages", pages)
    # As the real service pages: every non-empty page has a token, so the last one is empty.
    check("list_tasks paging", pages == [2, 2, 2, 0], pages)
    expect_error("create_task duplicate name", "ALREADY_EXISTS",
                 lambda: client.create_task(parent=q, task={"name": f"{q}/tasks/t0",
                                                            "http_request": {"url": worker.url}}),
                 "already exists")
    client.delete_task(name=f"{q}/tasks/t1")
    expect_error("get_task deleted", "NOT_FOUND", lambda: client.get_task(name=f"{q}/tasks/t1"))
    expect_error("create_task recently used name", "ALREADY_EXISTS",
                 lambda: client.create_task(parent=q, task={"name": f"{q}/tasks/t1",
                                                            "http_request": {"url": worker.url}}),
                 "existed too recently")
    expect_error("create_task bad url", "INVALID_ARGUMENT",
                 lambda: client.create_task(parent=q, task={"http_request": {"url": "ftp://example.com/"}}),
                 "HttpTarget.url must start with 'http://' or 'https://'.")
    expect_error("create_task no target", "INVALID_ARGUMENT",
                 lambda: client.create_task(parent=q, task={"name": f"{q}/tasks/x"}))
    expect_error("create_task missing queue", "NOT_FOUND",
                 lambda: client.create_task(parent=f"{location}/queues/missing",
                                            task={"http_request": {"url": worker.url}}))
    expect_error("get_queue missing", "NOT_FOUND", lambda: client.get_queue(name=f"{location}/queues/missing"),
                 "Queue does not exist. If you just created the queue, wait at least a minute for the queue to initialize.")
    expect_error("get_queue bad name", "INVALID_ARGUMENT", lambda: client.get_queue(name=f"{location}/queues/bad_name"),
                 "Queue ID \"bad_name\" can contain only letters")

    # RunTask dispatches at once even though the queue is paused.
    ran = client.run_task(name=f"{q}/tasks/t2")
    record("run_task", short(ran.name))
    delivered = worker.wait_for("/paged/2")
    check("run_task delivery", delivered["body"] == b"payload-2", delivered)

    # Resume: the rest arrive, with the Cloud Tasks headers.
    resumed = client.resume_queue(name=q)
    check("resume_queue", resumed.state == tasks_v2.Queue.State.RUNNING, resumed)
    d = worker.wait_for("/paged/3")
    h = {k.lower(): v for k, v in d["headers"].items()}
    seen = {
        "queue": h.get("x-cloudtasks-queuename"),
        "task": h.get("x-cloudtasks-taskname"),
        "retry_count": h.get("x-cloudtasks-taskretrycount"),
        "execution_count": h.get("x-cloudtasks-taskexecutioncount"),
        "has_eta": "x-cloudtasks-tasketa" in h,
        "custom": h.get("x-custom"),
        "user_agent": h.get("user-agent"),
        "body": d["body"].decode(),
    }
    record("delivery headers", seen)
    check("delivery headers", seen["queue"] == "compat" and seen["task"] == "t3" and seen["custom"] == "yes"
          and seen["retry_count"] == "0" and seen["has_eta"] and seen["user_agent"] == "Google-Cloud-Tasks", seen)
    worker.wait_for("/anonymous")

    # Batches: not atomic; the operation reports failures by index and reads back by name.
    client.pause_queue(name=q)
    requests = [{"parent": q, "task": {"name": f"{q}/tasks/b{i}", "http_request": {"url": f"{worker.url}/batch/{i}"}}}
                for i in range(3)]
    # t0 ran earlier, so its name is still reserved: that entry alone fails.
    requests.append({"parent": q, "task": {"name": f"{q}/tasks/t0", "http_request": {"url": worker.url}}})
    expect_error("batch_create_tasks duplicate name", "INVALID_ARGUMENT",
                 lambda: client.batch_create_tasks(request={"parent": q, "requests": requests + [requests[0]]}),
                 f"Duplicate task name in the batch request: {q}/tasks/b0")
    expect_error("batch_create_tasks other queue", "INVALID_ARGUMENT",
                 lambda: client.batch_create_tasks(request={"parent": q, "requests": [
                     {"parent": f"{location}/queues/other", "task": {"http_request": {"url": worker.url}}}]}),
                 f"All tasks in a batch request must target the same queue. Found task for queue "
                 f"{location}/queues/other in batch request for queue {q}.")
    created_op = client.batch_create_tasks(request={"parent": q, "requests": requests})
    result = created_op.result(timeout=10)
    meta = created_op.metadata
    record("batch_create_tasks", {"created": [short(t.name) for t in result.tasks], "state": meta.state.name,
                                  "failed": {str(k): [v.code, v.message] for k, v in meta.failed_requests.items()}})
    check("batch_create_tasks", [short(t.name) for t in result.tasks] == [f"compat/tasks/b{i}" for i in range(3)], result)
    check("batch_create_tasks state", meta.state.name == "PARTIALLY_SUCCEEDED" and list(meta.failed_requests) == [3], meta)
    check("batch_create_tasks failure code", meta.failed_requests[3].code == 6, meta)  # ALREADY_EXISTS
    read_back = client.get_operation(request={"name": created_op.operation.name})
    check("get_operation", read_back.done and read_back.name == created_op.operation.name, read_back)
    record("get_operation", {"done": read_back.done, "name": read_back.name.replace(PROJECT, "PROJECT").split("/operations/")[0]})
    deleted_op = client.batch_delete_tasks(request={"parent": q, "names": [f"{q}/tasks/b0", f"{q}/tasks/b1",
                                                                             f"{q}/tasks/never"]})
    deleted_op.result(timeout=10)
    dmeta = deleted_op.metadata
    record("batch_delete_tasks", {"state": dmeta.state.name, "failed": sorted(dmeta.failed_requests)})
    check("batch_delete_tasks", dmeta.state.name == "PARTIALLY_SUCCEEDED" and sorted(dmeta.failed_requests) == [2], dmeta)
    check("batch_delete_tasks entry", dmeta.failed_requests[2].message == "Requested entity was not found.", dmeta)
    # A delete batch where every name fails still ends PARTIALLY_SUCCEEDED, with an error.
    none_op = client.batch_delete_tasks(request={"parent": q, "names": [f"{q}/tasks/never"]})
    none_error = none_op.exception(timeout=10)
    record("batch_delete_tasks none", {"state": none_op.metadata.state.name, "error": str(none_error)})
    check("batch_delete_tasks none", none_op.metadata.state.name == "PARTIALLY_SUCCEEDED" and none_error is not None
          and "None of the requests succeeded" in str(none_error), none_error)
    expect_error("get_task batch-deleted", "NOT_FOUND", lambda: client.get_task(name=f"{q}/tasks/b0"))
    expect_error("batch_create_tasks over the limit", "INVALID_ARGUMENT",
                 lambda: client.batch_create_tasks(request={"parent": q, "requests": [
                     {"parent": q, "task": {"http_request": {"url": worker.url}}}] * 101}),
                 "A maximum of 100 tasks can be created in a single batch, but got 101 tasks.")
    # A request_id names the operation; using it again is refused, as the real service does.
    request_id = "retry-1"
    once = client.batch_create_tasks(request={"parent": q, "request_id": request_id, "requests": [
        {"parent": q, "task": {"http_request": {"url": f"{worker.url}/idempotent"}}}]})
    once.result(timeout=10)
    check("batch_create_tasks request_id", once.operation.name == f"{location}/operations/{request_id}", once.operation)
    expect_error("batch_create_tasks request_id reused", "INVALID_ARGUMENT",
                 lambda: client.batch_create_tasks(request={"parent": q, "request_id": request_id, "requests": [
                     {"parent": q, "task": {"http_request": {"url": worker.url}}}]}),
                 f"Duplicate operation id in the batch request: {request_id}")
    record("batch_create_tasks request_id", "named by request_id")

    # IAM: stored with an etag, read-modify-write refused when stale.
    empty = client.get_iam_policy(request={"resource": q})
    check("get_iam_policy", list(empty.bindings) == [] and empty.etag == b"\x00\x20\x01" and empty.version == 0, empty)
    policy = client.set_iam_policy(request={"resource": q, "policy": {
        "bindings": [{"role": "roles/cloudtasks.enqueuer", "members": ["serviceAccount:app@p.iam.gserviceaccount.com"]}],
        "etag": empty.etag}})
    record("set_iam_policy", [[b.role, list(b.members)] for b in policy.bindings])
    check("set_iam_policy", policy.etag != empty.etag and policy.version == 1, policy)
    check("get_iam_policy after set", client.get_iam_policy(request={"resource": q}) == policy, policy)
    expect_error("set_iam_policy stale etag", "ABORTED",
                 lambda: client.set_iam_policy(request={"resource": q, "policy": {"bindings": [], "etag": empty.etag}}))
    expect_error("set_iam_policy bad member", "INVALID_ARGUMENT",
                 lambda: client.set_iam_policy(request={"resource": q, "policy": {
                     "bindings": [{"role": "roles/cloudtasks.viewer", "members": ["someone"]}]}}))
    granted = client.test_iam_permissions(request={"resource": q, "permissions": [
        "cloudtasks.tasks.create", "cloudtasks.queues.get", "cloudtasks.tasks.create"]})
    record("test_iam_permissions", list(granted.permissions))
    check("test_iam_permissions", list(granted.permissions) == ["cloudtasks.queues.get", "cloudtasks.tasks.create"],
          granted)
    expect_error("test_iam_permissions foreign", "INVALID_ARGUMENT",
                 lambda: client.test_iam_permissions(request={"resource": q, "permissions": ["storage.objects.get"]}),
                 "Permission storage.objects.get is not valid for this resource.")

    # CMEK config and locations.
    cmek_name = f"{location}/cmekConfig"
    check("get_cmek_config", client.get_cmek_config(name=cmek_name).kms_key == "", "a key was set")
    key = f"projects/{project}/locations/here/keyRings/r/cryptoKeys/k"
    updated_cmek = client.update_cmek_config(cmek_config={"name": cmek_name, "kms_key": key},
                                             update_mask=field_mask_pb2.FieldMask(paths=["kms_key"]))
    check("update_cmek_config", updated_cmek.kms_key == key and client.get_cmek_config(name=cmek_name).kms_key == key,
          updated_cmek)
    record("cmek_config", updated_cmek.kms_key.replace(PROJECT, "PROJECT"))
    expect_error("update_cmek_config bad key", "INVALID_ARGUMENT",
                 lambda: client.update_cmek_config(cmek_config={"name": cmek_name, "kms_key": "nope"}))
    locations = [l.location_id for l in client.list_locations(request={"name": f"projects/{project}"}).locations]
    record("list_locations", locations)
    check("list_locations", locations == ["here"], locations)
    got_location = client.get_location(request={"name": location})
    check("get_location", got_location.location_id == "here", got_location)

    # A queue-level http_target reroutes its tasks, and tasks carry a signed OIDC token
    # that a standard library verifies against tasklane's JWKS.
    tq = f"{location}/queues/targeted"
    port = worker.server.server_address[1]
    client.create_queue(parent=location, queue={"name": tq, "http_target": {
        "uri_override": {"host": "127.0.0.1", "port": port, "path_override": {"path": "/overridden"},
                         "uri_override_enforce_mode": "ALWAYS"},
        "header_overrides": [{"header": {"key": "X-Queue", "value": "set"}}],
        "oidc_token": {"service_account_email": "sa@p.iam.gserviceaccount.com", "audience": "https://aud.example"}}})
    target = client.get_queue(name=tq).http_target
    record("http_target", {"host": target.uri_override.host, "path": target.uri_override.path_override.path,
                           "mode": target.uri_override.uri_override_enforce_mode.name,
                           "headers": [[h.header.key, h.header.value] for h in target.header_overrides],
                           "oidc": target.oidc_token.service_account_email})
    check("http_target", target.uri_override.port == port, target)
    own = client.create_task(parent=tq, task={"http_request": {"url": "http://127.0.0.1:9/ignored"},
                                              "retry_config": {"max_attempts": 3, "min_backoff": duration_pb2.Duration(seconds=1)}})
    record("task retry_config", {"max_attempts": own.retry_config.max_attempts,
                                 "min_backoff": own.retry_config.min_backoff.total_seconds()})
    check("task retry_config", own.retry_config.max_attempts == 3
          and own.retry_config.min_backoff.total_seconds() == 1, own)
    d = worker.wait_for("/overridden")
    h = {k.lower(): v for k, v in d["headers"].items()}
    check("http_target header", h.get("x-queue") == "set", h)
    scheme, _, token = h.get("authorization", "").partition(" ")
    check("oidc token", scheme == "Bearer" and token, h)
    key = jwt.PyJWKClient(f"http://{endpoint}/.well-known/jwks.json").get_signing_key_from_jwt(token)
    claims = jwt.decode(token, key.key, algorithms=["RS256"], audience="https://aud.example",
                        issuer=f"http://{endpoint}")
    record("oidc claims", {k: claims[k] for k in ["aud", "email", "email_verified"]} | {"life": claims["exp"] - claims["iat"]})
    check("oidc claims", claims["email"] == "sa@p.iam.gserviceaccount.com" and claims["exp"] - claims["iat"] == 3600
          and claims["email_verified"] is True, claims)

    # A failed attempt is recorded as the real service records it.
    fq = f"{location}/queues/failing"
    client.create_queue(parent=location, queue={"name": fq, "retry_config": {
        "max_attempts": 2, "min_backoff": duration_pb2.Duration(seconds=600), "max_backoff": duration_pb2.Duration(seconds=600)}})
    failing = client.create_task(parent=fq, task={"http_request": {"url": f"{worker.url}/fail"}})
    worker.wait_for("/fail")
    def recorded():
        task = client.get_task(name=failing.name)
        return task if task.last_attempt.response_status.message else None
    seen = eventually(recorded) or client.get_task(name=failing.name)
    status = seen.last_attempt.response_status
    record("attempt status", {"code": status.code, "message": status.message, "responses": seen.response_count,
                              "dispatches": seen.dispatch_count})
    check("attempt status", status.code == 13 and status.message == "INTERNAL(13): HTTP status code 500"
          and seen.response_count == 0 and seen.dispatch_count == 1, seen)

    # Purge, then delete the queue.
    client.pause_queue(name=q)
    for i in range(3):
        client.create_task(parent=q, task={"http_request": {"url": f"{worker.url}/purged"}})
    purged = client.purge_queue(name=q)
    check("purge_queue", purged.purge_time.timestamp() > 0, purged)
    left = list(client.list_tasks(parent=q))
    record("list_tasks after purge", len(left))
    check("purge_queue", left == [], left)
    client.delete_queue(name=q)
    expect_error("get_queue deleted", "NOT_FOUND", lambda: client.get_queue(name=q))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--transport", choices=["grpc", "rest"], required=True)
    parser.add_argument("--project", required=True)
    args = parser.parse_args()
    global PROJECT
    PROJECT = args.project
    worker = Worker()
    run(make_client(args.endpoint, args.transport), args.project, worker, args.endpoint)
    print(json.dumps(RECORD, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
