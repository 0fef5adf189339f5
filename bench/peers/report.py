"""Print the drain comparison of one bench/peers/run.sh run: usage: report.py RESULTS_DIR."""

import json
import pathlib
import sys

out = pathlib.Path(sys.argv[1])
rows = json.loads((out / "tasklane.json").read_text())
# tasklane's drains: HTTP push (to a separate sink, on each store) and pull workers.
DRAINS = {
    "HTTP push drain (embedded)": "push, embedded",
    "HTTP push drain (postgres)": "push, postgres",
    "pull: lease 100 + acknowledge 100 per call (embedded)": "pull workers, embedded",
}
tasklane = {DRAINS[r["scenario"]]: r for r in rows if r["scenario"] in DRAINS}
peers = []
for name in ("graphile-worker", "pg-boss", "bullmq", "apalis"):
    path = out / f"{name}.json"
    if path.exists():
        peers.append(json.loads(path.read_text().strip().splitlines()[-1]))

print((out / "environment.txt").read_text().strip() if (out / "environment.txt").exists() else "")
print()
print(f"{'system':<34} {'jobs':>8} {'drain/s':>9} {'cpu s':>7} {'peak MB':>8}  settings")
for kind, r in tasklane.items():
    usage = r.get("server") or {}
    print(
        f"{'tasklane, ' + kind:<34} {r['tasks']:>8} {r['throughput']:>9.0f}"
        f" {usage.get('cpu_seconds', 0):>7.1f} {usage.get('peak_rss_mb', 0):>8.0f}  {r['note']}"
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
    ratios = ", ".join(f"{kind} {r['throughput'] / p['drain_per_s']:.2f}×" for kind, r in tasklane.items())
    print(f"  {p['system']:<16} {ratios}")
print()
print("A peer's drain counts calls of a no-op function in its worker process. tasklane's pull drain is")
print("the same shape (workers lease 100 and acknowledge 100 per HTTP call, no-op handling); its push")
print("drain does more per task: an HTTP request to a separate worker (the sink), each outcome committed.")
print("cpu s and peak MB: tasklane serve, or the peer's Node/Rust process; not PostgreSQL or Redis.")
