#!/usr/bin/env python3
"""Submit work to tasklane and print the two job ids: a batch of images, then one video.

    TASKLANE=http://127.0.0.1:8790 WORKER=http://127.0.0.1:9000 python3 submit.py [COUNT]

Creates the queue `images` if it is missing, then a batch job of COUNT images (default 20)
and a one-task video job, both labelled with the user who asked.
Follow each with `tasklane jobs watch ID`.
"""

import json
import os
import sys
import urllib.request

TASKLANE = os.environ.get("TASKLANE", "http://127.0.0.1:8790")
WORKER = os.environ.get("WORKER", "http://127.0.0.1:9000")
QUEUE = "projects/local/locations/local/queues/images"


def call(method, path, body=None):
    request = urllib.request.Request(
        f"{TASKLANE}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
        method=method,
    )
    try:
        return json.loads(urllib.request.urlopen(request, timeout=10).read() or b"{}")
    except urllib.error.HTTPError as e:
        if e.code == 409:  # the queue exists already
            return None
        raise SystemExit(f"{method} {path}: {e.code} {e.read().decode()}")


count = int(sys.argv[1]) if len(sys.argv) > 1 else 20
call("POST", "/v2/projects/local/locations/local/queues",
     {"name": QUEUE, "retryConfig": {"maxAttempts": 3, "minBackoff": "0.2s"}})
job = call("POST", "/v1/jobs", {
    "queue": QUEUE,
    "labels": {"user": "42"},
    "tasks": [{"url": f"{WORKER}/render", "body": f"photo-{i:03}.jpg"} for i in range(count)],
})
print(job["id"])
video = call("POST", "/v1/jobs", {
    "queue": QUEUE,
    "labels": {"user": "42"},
    "task": {"url": f"{WORKER}/video", "body": "holiday.mp4"},
})
print(video["id"])
