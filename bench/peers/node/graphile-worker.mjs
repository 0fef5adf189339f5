// graphile-worker with the settings its performance page documents: 24 concurrent jobs,
// a pool of 25, a local queue of 500 and batched completions.
import { Logger, makeWorkerUtils, run } from "graphile-worker";
import { Tally, databaseUrl, enqueueInBatches, jobs, packageVersion, report, runId } from "./common.mjs";

const settings = { concurrency: 24, maxPoolSize: 25, localQueue: { size: 500 }, completeJobBatchDelay: 0 };
const schema = `gw_${runId}`;
const logger = new Logger(() => (level, message) => level === "error" && console.error(message));
const utils = await makeWorkerUtils({ connectionString: databaseUrl, schema, logger });
await utils.migrate();
try {
  const enqueueSeconds = await enqueueInBatches(
    (i) => ({ identifier: "noop", payload: { i } }),
    (batch) => utils.addJobs(batch),
  );
  const tally = new Tally(jobs);
  const start = performance.now();
  const runner = await run({
    connectionString: databaseUrl,
    schema,
    concurrency: settings.concurrency,
    maxPoolSize: settings.maxPoolSize,
    noHandleSignals: true,
    // Quiet: the default logger writes a line per job, which would be measured too.
    logger,
    preset: {
      worker: { localQueue: settings.localQueue, completeJobBatchDelay: 0, failJobBatchDelay: 0 },
    },
    taskList: { noop: async (payload) => tally.ran(payload.i) },
  });
  const end = await tally.done;
  await runner.stop();
  report({
    peer: "graphile-worker",
    version: await packageVersion("graphile-worker"),
    settings,
    enqueueSeconds,
    drainSeconds: (end - start) / 1000,
    tally,
  });
} finally {
  await utils.withPgClient((c) => c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`));
  await utils.release();
}
// Leave even if a library keeps a timer or socket open after stopping.
process.exit(0);
