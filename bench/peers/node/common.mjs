// What every peer script shares: arguments, a per-run name, and the one JSON line it prints.
// Usage of a peer script: node <peer>.mjs <jobs>
// Environment: BENCH_DATABASE_URL (PostgreSQL peers), BENCH_REDIS_URL (BullMQ).

export const jobs = Number(process.argv[2] ?? 100000);
if (!Number.isInteger(jobs) || jobs <= 0) {
  console.error(`the job count must be a positive integer, not ${process.argv[2]}`);
  process.exit(2);
}
export const databaseUrl = process.env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
export const redisUrl = process.env.BENCH_REDIS_URL ?? "redis://127.0.0.1:6379";
export const runId = `bench_${process.pid}_${Date.now()}`;

/** Counts handler calls by job number and fails on a repeat, so a drain is only timed when every job ran once. */
export class Tally {
  constructor(total) {
    this.total = total;
    this.seen = new Uint8Array(total);
    this.count = 0;
    this.repeats = 0;
    this.done = new Promise((resolve) => (this.resolve = resolve));
  }
  ran(i) {
    if (this.seen[i]) {
      this.repeats += 1;
      return;
    }
    this.seen[i] = 1;
    this.count += 1;
    if (this.count === this.total) this.resolve(performance.now());
  }
}

async function timed(f) {
  const start = performance.now();
  await f();
  return (performance.now() - start) / 1000;
}

/** Enqueue every job, 1,000 per call: `make(i)` builds job i, `send(batch)` enqueues a batch. Returns seconds. */
export function enqueueInBatches(make, send) {
  return timed(async () => {
    for (let from = 0; from < jobs; from += 1000) {
      const batch = [];
      for (let i = from; i < Math.min(from + 1000, jobs); i++) batch.push(make(i));
      await send(batch);
    }
  });
}

/** Print the result line the report reads. */
export function report({ peer, version, settings, enqueueSeconds, drainSeconds, tally }) {
  if (tally.count !== tally.total || tally.repeats !== 0) {
    console.error(`${peer}: ${tally.count} of ${tally.total} jobs ran, ${tally.repeats} ran again`);
    process.exit(1);
  }
  const usage = process.resourceUsage();
  console.log(
    JSON.stringify({
      system: peer,
      version,
      settings,
      jobs: tally.total,
      enqueue_per_s: tally.total / enqueueSeconds,
      drain_seconds: drainSeconds,
      drain_per_s: tally.total / drainSeconds,
      cpu_seconds: (usage.userCPUTime + usage.systemCPUTime) / 1e6,
      peak_rss_mb: usage.maxRSS / 1024,
    }),
  );
}

export async function packageVersion(name) {
  const { createRequire } = await import("node:module");
  const require = createRequire(import.meta.url);
  return require(`${name}/package.json`).version;
}
