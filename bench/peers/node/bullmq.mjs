// BullMQ with its documented throughput settings: one worker at concurrency 100, jobs added
// with addBulk 1,000 at a time, completed jobs removed (no history kept).
import { Queue, Worker } from "bullmq";
import { Tally, enqueueInBatches, jobs, packageVersion, redisUrl, report, runId } from "./common.mjs";

const settings = { concurrency: 100, removeOnComplete: true };
const url = new URL(redisUrl);
const connection = { host: url.hostname, port: Number(url.port || 6379) };
const queue = new Queue(runId, { connection });
try {
  const enqueueSeconds = await enqueueInBatches(
    (i) => ({ name: "noop", data: { i }, opts: { removeOnComplete: true, removeOnFail: true } }),
    (batch) => queue.addBulk(batch),
  );
  const tally = new Tally(jobs);
  const start = performance.now();
  const worker = new Worker(runId, async (job) => tally.ran(job.data.i), {
    connection,
    concurrency: settings.concurrency,
  });
  const end = await tally.done;
  await worker.close();
  report({
    peer: "BullMQ",
    version: await packageVersion("bullmq"),
    settings,
    enqueueSeconds,
    drainSeconds: (end - start) / 1000,
    tally,
  });
} finally {
  await queue.obliterate({ force: true });
  await queue.close();
}
// Leave even if a library keeps a timer or socket open after stopping.
process.exit(0);
