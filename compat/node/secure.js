#!/usr/bin/env node
// Drive a tasklane that requires an API token with the official Node client over gRPC,
// the ways docs/clients.md shows: on TLS with the token as call credentials, or on a
// loopback cleartext channel with the token as call metadata.
// Usage: node secure.js --endpoint 127.0.0.1:PORT --token TOKEN --project ID [--root CERT.pem]
'use strict';

process.env.NO_GCE_CHECK = 'true';
delete process.env.GOOGLE_APPLICATION_CREDENTIALS;

const fs = require('node:fs');
const {CloudTasksClient} = require('@google-cloud/tasks');
const grpc = require('@grpc/grpc-js');
const {OAuth2Client} = require('google-auth-library');

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, a, i, all) => (a.startsWith('--') ? [...pairs, [a.slice(2), all[i + 1]]] : pairs), []),
);
const [host, port] = args.endpoint.split(':');
const passed = [];

function check(step, condition, detail) {
  if (!condition) {
    console.error(`FAILED at ${step}: ${JSON.stringify(detail)}`);
    process.exit(1);
  }
  passed.push(step);
}

function client(token) {
  let sslCreds = grpc.credentials.createInsecure();
  if (args.root) {
    sslCreds = grpc.credentials.createSsl(fs.readFileSync(args.root));
    if (token) {
      const bearer = grpc.credentials.createFromMetadataGenerator((_, done) => {
        const md = new grpc.Metadata();
        md.add('authorization', `Bearer ${token}`);
        done(null, md);
      });
      sslCreds = grpc.credentials.combineChannelCredentials(sslCreds, bearer);
    }
  }
  const options = {servicePath: host, port: Number(port), sslCreds, authClient: new OAuth2Client()};
  if (args.root) options['grpc.ssl_target_name_override'] = 'localhost';
  return new CloudTasksClient(options);
}

// On a cleartext channel the token travels as call metadata.
function callOptions(token) {
  return !args.root && token ? {otherArgs: {headers: {authorization: `Bearer ${token}`}}} : {};
}

async function main() {
  const parent = `projects/${args.project}/locations/here`;
  for (const [step, token] of [['without a token', null], ['a wrong token', 'tlk_wrong']]) {
    try {
      await client(token).listQueues({parent}, callOptions(token));
      check(`${step}: refused`, false, 'the call succeeded');
    } catch (e) {
      check(`${step}: UNAUTHENTICATED`, e.code === grpc.status.UNAUTHENTICATED, {code: e.code, details: e.details});
    }
  }
  const tasks = client(args.token);
  const opts = callOptions(args.token);
  const [queue] = await tasks.createQueue({parent, queue: {name: `${parent}/queues/secure-node`}}, opts);
  check('create a queue with the token', queue.name.endsWith('/queues/secure-node'), queue.name);
  await tasks.pauseQueue({name: queue.name}, opts);
  const [task] = await tasks.createTask(
    {parent: queue.name, task: {httpRequest: {url: 'http://127.0.0.1:9/work', body: Buffer.from('hi')}}},
    opts,
  );
  check('create a task', task.name.startsWith(`${queue.name}/tasks/`), task.name);
  const [queues] = await tasks.listQueues({parent}, opts);
  check('list queues', queues.some(q => q.name === queue.name), queues.map(q => q.name));
  console.log(JSON.stringify({passed}));
  process.exit(0);
}

main().catch(e => {
  console.error(`FAILED: ${e.stack || e}`);
  process.exit(1);
});
