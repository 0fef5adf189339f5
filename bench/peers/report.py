"""Print the drain comparison of one bench/peers/run.sh run: usage: report.py RESULTS_DIR."""

import json
import pathlib
import sys

out = pathlib.Path(sys.argv[1])
rows = json.loads((out / "tasklane.json").read_text())
tasklane = {}
for r in rows:
    for store in ("embedded", "postgres"):
        if r["scenario"] == f"HTTP push drain ({store})":
            tasklane[store] = r
peers = []
for name in ("graphile-worker", "pg-boss", "bullmq", "apalis"):
    path = out / f"{name}.json"
    if path.exists():
        peers.append(json.loads(path.read_text().strip().splitlines()[-1]))

print((out / "environment.txt").read_text().strip() if (out / "environment.txt").exists() else "")
print()
print(f"{'system':<34} {'jobs':>8} {'drain/s':>9} {'cpu s':>7} {'peak MB':>8}  settings")
for store, r in tasklane.items():
    usage = r.get("server") or {}
    print(
        f"{'tasklane, ' + store + ' (HTTP push)':<34} {r['tasks']:>8} {r['throughput']:>9.0f}"
        f" {usage.get('cpu_seconds', 0):>7.1f} {usage.get('peak_rss_mb', 0):>8.0f}  50 queues at 500/s, no-op HTTP sink"
    )
for p in peers:
    settings = json.dumps(p["settings"], separators=(",", ":"))
    print(
        f"{p['system'] + ' ' + p['version']:<34} {p['jobs']:>8} {p['drain_per_s']:>9.0f}"
        f" {p['cpu_seconds']:>7.1f} {p['peak_rss_mb']:>8.0f}  {settings}"
    )
print()
print("ratios, tasklane ÷ peer (drain rate, same run):")
for p in peers:
    ratios = ", ".join(f"{store} {r['throughput'] / p['drain_per_s']:.2f}×" for store, r in tasklane.items())
    print(f"  {p['system']:<16} {ratios}")
print()
print("tasklane's drain counts HTTP deliveries to a separate sink, each committed; a peer's counts")
print("calls of an in-process no-op function. cpu s and peak MB: the worker process only (tasklane")
print("serve; the peer's Node or Rust process), not PostgreSQL or Redis.")
