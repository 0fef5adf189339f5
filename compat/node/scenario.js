#!/usr/bin/env node
// Drive a running tasklane with the official Node client, @google-cloud/tasks, over gRPC.
// Usage: node scenario.js --endpoint 127.0.0.1:PORT --project ID
// Every step asserts what a Cloud Tasks user relies on; exits non-zero on the first wrong answer.
'use strict';

// The Google libraries must never look for a cloud metadata server from this machine.
process.env.NO_GCE_CHECK = 'true';
delete process.env.GOOGLE_APPLICATION_CREDENTIALS;

const crypto = require('node:crypto');
const http = require('node:http');
const {CloudTasksClient} = require('@google-cloud/tasks');
const grpc = require('@grpc/grpc-js');
const {OAuth2Client} = require('google-auth-library');
const {status} = grpc;

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, a, i, all) => (a.startsWith('--') ? [...pairs, [a.slice(2), all[i + 1]]] : pairs), []),
);
const [host, port] = args.endpoint.split(':');
const steps = [];

function check(step, condition, detail) {
  if (!condition) {
    console.error(`FAILED at ${step}: ${JSON.stringify(detail)}`);
    console.error(JSON.stringify(steps, null, 1));
    process.exit(1);
  }
  steps.push(step);
}

async function expectError(step, code, call, message) {
  try {
    await call();
  } catch (e) {
    check(step, e.code === code, {expected: code, got: e.code, message: e.details});
    if (message !== undefined) check(`${step}: message`, String(e.details).includes(message), e.details);
    return;
  }
  check(step, false, 'the call succeeded');
}

function startWorker() {
  const received = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', c => chunks.push(c));
    req.on('end', () => {
      received.push({path: req.url, headers: req.headers, body: Buffer.concat(chunks)});
      res.writeHead(200).end();
    });
  });
  return new Promise(resolve =>
    server.listen(0, '127.0.0.1', () => {
      const url = `http://127.0.0.1:${server.address().port}`;
      const waitFor = async path => {
        for (let i = 0; i < 500; i++) {
          const found = received.find(r => r.path === path);
          if (found) return found;
          await new Promise(r => setTimeout(r, 20));
        }
        check(`delivery of ${path}`, false, 'the worker never received it');
      };
      resolve({url, waitFor, close: () => { server.closeAllConnections(); server.close(); }});
    }),
  );
}

async function main() {
  const client = new CloudTasksClient({
    servicePath: host,
    port: Number(port),
    sslCreds: grpc.credentials.createInsecure(),
    authClient: new OAuth2Client(),
  });
  const worker = await startWorker();
  const location = `projects/${args.project}/locations/here`;
  const q = `${location}/queues/compat`;

  const [created] = await client.createQueue({parent: location, queue: {name: q}});
  check('createQueue', created.state === 'RUNNING' && created.rateLimits.maxDispatchesPerSecond === 500, created);
  await expectError('createQueue twice', status.ALREADY_EXISTS, () => client.createQueue({parent: location, queue: {name: q}}));
  const [got] = await client.getQueue({name: q});
  check('getQueue', got.name === q, got);
  const [updated] = await client.updateQueue({
    queue: {name: q, rateLimits: {maxDispatchesPerSecond: 5}},
    updateMask: {paths: ['rate_limits.max_dispatches_per_second']},
  });
  check('updateQueue', updated.rateLimits.maxDispatchesPerSecond === 5 && updated.rateLimits.maxBurstSize === 10, updated);
  const [paused] = await client.pauseQueue({name: q});
  check('pauseQueue', paused.state === 'PAUSED', paused);
  const [queues] = await client.listQueues({parent: location});
  check('listQueues', queues.map(x => x.name).join() === q, queues);
  const [slow] = await client.listQueues({parent: location, filter: 'rate_limits.max_dispatches_per_second < 10 AND state: PAUSED'});
  check('listQueues filter', slow.map(x => x.name).join() === q, slow);
  await expectError(
    'listQueues bad filter',
    status.INVALID_ARGUMENT,
    () => client.listQueues({parent: location, filter: 'bogus_field: 1'}),
    "Field not found: 'bogus_field'.",
  );
  await expectError(
    'updateQueue bad mask',
    status.INVALID_ARGUMENT,
    () => client.updateQueue({queue: {name: q}, updateMask: {paths: ['rateLimits']}}),
    'Invalid mask: rateLimits',
  );

  for (let i = 0; i < 5; i++) {
    await client.createTask({
      parent: q,
      task: {name: `${q}/tasks/t${i}`, httpRequest: {url: `${worker.url}/paged/${i}`, body: Buffer.from(`payload-${i}`)}},
    });
  }
  const [anonymous] = await client.createTask({parent: q, task: {httpRequest: {url: `${worker.url}/anonymous`}}});
  check('createTask without a name', /\/tasks\/\d+$/.test(anonymous.name), anonymous.name);
  const [basic] = await client.getTask({name: `${q}/tasks/t0`});
  const [full] = await client.getTask({name: `${q}/tasks/t0`, responseView: 'FULL'});
  check('getTask BASIC', basic.httpRequest.body.length === 0 && basic.view === 'BASIC', basic);
  check('getTask FULL', Buffer.from(full.httpRequest.body).toString() === 'payload-0' && full.view === 'FULL', full);
  const [firstPage, nextRequest] = await client.listTasks({parent: q, pageSize: 2}, {autoPaginate: false});
  check('listTasks first page', firstPage.length === 2 && nextRequest && nextRequest.pageToken, {firstPage, nextRequest});
  let listed = 0;
  for await (const task of client.listTasksAsync({parent: q, pageSize: 2})) listed += task.name.startsWith(q) ? 1 : 0;
  check('listTasks all pages', listed === 6, listed);
  await expectError('createTask duplicate name', status.ALREADY_EXISTS, () =>
    client.createTask({parent: q, task: {name: `${q}/tasks/t0`, httpRequest: {url: worker.url}}}),
  );
  await client.deleteTask({name: `${q}/tasks/t1`});
  await expectError('getTask deleted', status.NOT_FOUND, () => client.getTask({name: `${q}/tasks/t1`}));
  await expectError(
    'createTask recently used name',
    status.ALREADY_EXISTS,
    () => client.createTask({parent: q, task: {name: `${q}/tasks/t1`, httpRequest: {url: worker.url}}}),
    'existed too recently',
  );
  await expectError(
    'createTask bad url',
    status.INVALID_ARGUMENT,
    () => client.createTask({parent: q, task: {httpRequest: {url: 'ftp://example.com/'}}}),
    "HttpTarget.url must start with 'http://' or 'https://'.",
  );
  await expectError(
    'getQueue missing',
    status.NOT_FOUND,
    () => client.getQueue({name: `${location}/queues/missing`}),
    'Queue does not exist. If you just created the queue, wait at least a minute for the queue to initialize.',
  );

  const [ran] = await client.runTask({name: `${q}/tasks/t2`});
  check('runTask', ran.name === `${q}/tasks/t2`, ran);
  const delivered = await worker.waitFor('/paged/2');
  check('runTask delivery', delivered.body.toString() === 'payload-2', delivered);
  await client.resumeQueue({name: q});
  const d = await worker.waitFor('/paged/3');
  check(
    'delivery headers',
    d.headers['x-cloudtasks-queuename'] === 'compat' && d.headers['x-cloudtasks-taskname'] === 't3' &&
      d.headers['user-agent'] === 'Google-Cloud-Tasks',
    d.headers,
  );

  await client.pauseQueue({name: q});
  // The v2 Node client (6.x) has no batch methods; the Python client covers them.
  const [empty] = await client.getIamPolicy({resource: q});
  const [policy] = await client.setIamPolicy({
    resource: q,
    policy: {bindings: [{role: 'roles/cloudtasks.enqueuer', members: ['user:dev@example.com']}], etag: empty.etag},
  });
  check('setIamPolicy', policy.bindings.length === 1 && Buffer.compare(Buffer.from(policy.etag), Buffer.from(empty.etag)) !== 0, policy);
  await expectError('setIamPolicy stale etag', status.ABORTED, () =>
    client.setIamPolicy({resource: q, policy: {bindings: [], etag: empty.etag}}),
  );
  // A task with an OIDC token: the worker verifies it against tasklane's JWKS.
  await client.resumeQueue({name: q});
  await client.createTask({
    parent: q,
    task: {httpRequest: {url: `${worker.url}/signed`, oidcToken: {serviceAccountEmail: 'node@p.iam.gserviceaccount.com'}}},
  });
  const signed = await worker.waitFor('/signed');
  const [, token] = (signed.headers.authorization || '').split(' ');
  const [h64, c64, s64] = token.split('.');
  const header = JSON.parse(Buffer.from(h64, 'base64url'));
  const jwks = await (await fetch(`http://${args.endpoint}/.well-known/jwks.json`)).json();
  const jwk = jwks.keys.find(k => k.kid === header.kid);
  const verified = crypto.verify('RSA-SHA256', Buffer.from(`${h64}.${c64}`), crypto.createPublicKey({key: jwk, format: 'jwk'}), Buffer.from(s64, 'base64url'));
  const claims = JSON.parse(Buffer.from(c64, 'base64url'));
  check('oidc token verifies', verified && claims.aud === `${worker.url}/signed` && claims.email === 'node@p.iam.gserviceaccount.com', claims);
  await client.pauseQueue({name: q});
  await client.createTask({parent: q, task: {httpRequest: {url: `${worker.url}/purged`}}});
  await client.purgeQueue({name: q});
  const [left] = await client.listTasks({parent: q});
  check('purgeQueue', left.length === 0, left);
  await client.deleteQueue({name: q});
  await expectError('getQueue deleted', status.NOT_FOUND, () => client.getQueue({name: q}));

  worker.close();
  await client.close();
  console.log(JSON.stringify({passed: steps}));
  process.exit(0);
}

main().catch(e => {
  console.error(e);
  process.exit(1);
});
