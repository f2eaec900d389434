// The load driver of the peer benchmark for the systems reached from Node: `direct` (this
// process calls the echo backend three times itself), `nexus` (ExecutePattern over Connect JSON)
// and `restate` (the ingress HTTP API). temporal_driver.py is the same driver in Python, for
// Temporal: the two must keep the same methodology (measure.js / measure.py).
//
// Prints one JSON object on stdout (the result, see measure.js), progress on stderr.
//
//     node driver.js --system direct  --target 127.0.0.1:ECHO_PORT          [common options]
//     node driver.js --system nexus   --target http://127.0.0.1:PORT --pattern NAME
//     node driver.js --system restate --target http://127.0.0.1:INGRESS_PORT/Echo3/run
//
// Common options: --label NAME --warmup N --runs N --concurrency N --seconds S
//                 --pids self|PID,PID… --run-timeout-ms MS
'use strict';

const http = require('http');
const path = require('path');
const { measure, parseArgs } = require('./measure');

// One run of every system: three chained calls starting from this input, which must come back
// as the same text with n + 3.
const INPUT = { text: 'peers', n: 0 };

function checkReply(reply) {
  if (!reply || reply.text !== INPUT.text || Number(reply.n) !== INPUT.n + 3) {
    throw new Error(`unexpected result ${JSON.stringify(reply)}`);
  }
}

// direct: the baseline, the three calls made by the client itself over one grpc-js channel.
function directRunner(opts) {
  const grpc = require('@grpc/grpc-js');
  const protoLoader = require('@grpc/proto-loader');
  const definition = protoLoader.loadSync(path.join(__dirname, 'echo.proto'), { keepCase: true, defaults: true });
  const { EchoService } = grpc.loadPackageDefinition(definition).bench.peers.v1;
  const client = new EchoService(opts.target, grpc.credentials.createInsecure());
  const echo = (request) =>
    new Promise((resolve, reject) => {
      const deadline = new Date(Date.now() + opts.runTimeoutMs);
      client.Echo(request, { deadline }, (err, reply) => (err ? reject(err) : resolve(reply)));
    });
  return {
    async run() {
      let reply = INPUT;
      for (let step = 0; step < 3; step += 1) {
        reply = await echo({ text: reply.text, n: reply.n });
      }
      checkReply(reply);
    },
    close() {
      client.close();
    },
  };
}

// POST a JSON body and parse the JSON answer, on a keep-alive agent with one socket per client.
function postJson(agent, url, body, timeoutMs) {
  const payload = Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      {
        method: 'POST',
        agent,
        headers: { 'content-type': 'application/json', 'content-length': payload.length },
        timeout: timeoutMs,
      },
      (res) => {
        const chunks = [];
        res.on('data', (chunk) => chunks.push(chunk));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          if (res.statusCode !== 200) {
            reject(new Error(`HTTP ${res.statusCode} from ${url}: ${text.slice(0, 300)}`));
            return;
          }
          try {
            resolve(JSON.parse(text));
          } catch (err) {
            reject(new Error(`not JSON from ${url}: ${text.slice(0, 300)}`));
          }
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url} within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(payload);
  });
}

function httpAgent(opts) {
  return new http.Agent({ keepAlive: true, maxSockets: opts.concurrency });
}

// nexus: ExecutePattern over Connect unary JSON; the answer carries the execution's status.
function nexusRunner(opts) {
  if (!opts.pattern) throw new Error('--pattern is required for --system nexus');
  const agent = httpAgent(opts);
  const url = `${opts.target.replace(/\/$/, '')}/nexus.v1.NexusService/ExecutePattern`;
  return {
    async run() {
      const answer = await postJson(agent, url, { pattern_name: opts.pattern, input: INPUT }, opts.runTimeoutMs);
      if (answer.status !== 'EXECUTION_STATUS_SUCCEEDED') {
        throw new Error(`execution ${answer.execution_id}: ${answer.status} ${JSON.stringify(answer.error || {})}`);
      }
      checkReply(answer.output);
    },
    close() {
      agent.destroy();
    },
  };
}

// restate: a request-response call of the Echo3 service's handler through the ingress.
function restateRunner(opts) {
  const agent = httpAgent(opts);
  return {
    async run() {
      checkReply(await postJson(agent, opts.target, INPUT, opts.runTimeoutMs));
    },
    close() {
      agent.destroy();
    },
  };
}

const RUNNERS = { direct: directRunner, nexus: nexusRunner, restate: restateRunner };

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const make = RUNNERS[opts.system];
  if (!make) throw new Error(`--system must be one of ${Object.keys(RUNNERS).join(', ')}`);
  if (!opts.target) throw new Error('--target is required');
  const runner = make(opts);
  try {
    const result = await measure(runner.run, opts);
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    runner.close();
  }
}

main().catch((err) => {
  console.error(`driver: ${err.message}`);
  process.exit(1);
});
