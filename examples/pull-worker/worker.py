#!/usr/bin/env python3
"""A pull worker with only the standard library: lease, report progress, acknowledge.

    TASKLANE=http://127.0.0.1:8790 QUEUE=thumbnails python3 worker.py

It long-polls the pull queue for up to 10 tasks at a time, "processes" each payload,
reports progress for tasks that belong to a job (with the job token the lease returned),
and acknowledges each task with its lease id, or fails it with a reason. With DRAIN=1 it
exits when nothing is due. `tasklane work --queue Q -- COMMAND` does the same for any
command, with lease renewal and timeouts.
"""

import base64
import json
import os
import sys
import urllib.parse
import urllib.request

TASKLANE = os.environ.get("TASKLANE", "http://127.0.0.1:8790")
QUEUE = urllib.parse.quote(os.environ.get("QUEUE", "thumbnails"), safe="")
DRAIN = os.environ.get("DRAIN") == "1"


def post(path, body, headers=None):
    request = urllib.request.Request(
        f"{TASKLANE}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=70) as response:
        return json.loads(response.read() or b"{}")


def process(task):
    payload = base64.b64decode(task["payload_base64"]).decode()
    if task.get("job_id"):
        post(f"/v1/jobs/{task['job_id']}/progress",
             {"percent": 50, "step": "thumbnail", "message": payload},
             {"X-Tasklane-Job-Token": task["job_token"]})
    if payload.startswith("broken"):
        raise ValueError(f"cannot read {payload}")
    return f"thumbnail of {payload}"


def main():
    done = 0
    while True:
        leased = post(f"/v1/queues/{QUEUE}/tasks:lease",
                      {"max_tasks": 10, "lease_duration": "60s", "wait": "1s" if DRAIN else "20s"})["tasks"]
        if not leased and DRAIN:
            break
        for task in leased:
            held = {"name": task["name"], "lease_id": task["lease_id"]}
            try:
                process(task)
                post(f"/v1/queues/{QUEUE}/tasks:acknowledge", {"tasks": [held]})
                done += 1
            except Exception as e:  # a failed attempt: tasklane retries it by the queue's backoff
                post(f"/v1/queues/{QUEUE}/tasks:fail", {"tasks": [{**held, "reason": str(e)}]})
    print(f"acknowledged {done}", file=sys.stderr)


if __name__ == "__main__":
    main()
