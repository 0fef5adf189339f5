#!/usr/bin/env python3
"""A tasklane worker with only the standard library.

POST /render renders one image of a batch: the batch's counts are its progress.
POST /video renders one video, a one-task job: the worker reports each step and the
result for its job, with the token tasklane delivered with the task.
An item whose name contains "broken" fails with 500, so tasklane retries it.

    PORT=9000 TASKLANE=http://127.0.0.1:8790 python3 worker.py
"""

import json
import os
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def report(job_api, job_id, token, what, payload):
    """POST a progress report, a result or a failure for the job."""
    request = urllib.request.Request(
        f"{job_api}/v1/jobs/{job_id}/{what}",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "X-Tasklane-Job-Token": token},
        method="POST",
    )
    try:
        urllib.request.urlopen(request, timeout=5).read()
    except urllib.error.HTTPError as e:
        # A batch job's progress belongs to the whole batch; late or backwards reports are refused.
        print(f"report {what} refused: {e.code} {e.read().decode()[:200]}", flush=True)


class Worker(BaseHTTPRequestHandler):
    def do_POST(self):
        image = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()  # or a video
        job_id = self.headers.get("X-Tasklane-Job-Id")
        token = self.headers.get("X-Tasklane-Job-Token")
        job_api = os.environ.get("TASKLANE", "http://127.0.0.1:8790")
        if "broken" in image:
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"cannot decode " + image.encode())
            return
        if self.path == "/video" and job_id:
            for step, name in enumerate(["decode", "render", "encode"], start=1):
                time.sleep(0.2)
                report(job_api, job_id, token, "progress",
                       {"percent": round(step * 100 / 3, 1), "step": name, "step_number": step, "message": image})
            report(job_api, job_id, token, "result", {"result": {"video": image, "url": f"file:///out/{image}"}})
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "9000"))), Worker)
    print(f"worker listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()
