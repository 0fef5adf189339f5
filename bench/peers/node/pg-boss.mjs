// pg-boss with its batch settings: jobs fetched 1,000 at a time by 4 workers, polled every 0.5 s
// (the shortest interval it allows), inserted 1,000 per call.
import PgBoss from "pg-boss";
import { Tally, databaseUrl, enqueueInBatches, jobs, packageVersion, report, runId } from "./common.mjs";

const settings = { workers: 4, batchSize: 1000, pollingIntervalSeconds: 0.5, max: 10 };
const schema = `pgb_${runId}`;
const boss = new PgBoss({ connectionString: databaseUrl, schema, max: settings.max });
boss.on("error", (e) => console.error(e));
await boss.start();
try {
  await boss.createQueue("noop");
  const enqueueSeconds = await enqueueInBatches(
    (i) => ({ name: "noop", data: { i } }),
    (batch) => boss.insert(batch),
  );
  const tally = new Tally(jobs);
  const start = performance.now();
  for (let w = 0; w < settings.workers; w++) {
    await boss.work(
      "noop",
      { batchSize: settings.batchSize, pollingIntervalSeconds: settings.pollingIntervalSeconds },
      async (batch) => {
        for (const job of batch) tally.ran(job.data.i);
      },
    );
  }
  const end = await tally.done;
  report({
    peer: "pg-boss",
    version: await packageVersion("pg-boss"),
    settings,
    enqueueSeconds,
    drainSeconds: (end - start) / 1000,
    tally,
  });
} finally {
  // Every job is done; a graceful stop after a long run was seen waiting for minutes.
  await boss.stop({ graceful: false, wait: true, timeout: 5000 });
  const pg = await import("pg");
  const client = new pg.default.Client({ connectionString: databaseUrl });
  await client.connect();
  await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await client.end();
}
// Leave even if a library keeps a timer or socket open after stopping.
process.exit(0);
