// The Restate side of the peer benchmark: service `Echo3`, whose handler `run` makes the three
// chained echo calls, each inside ctx.run (so each reply is journaled by restate-server before
// the next call), served over HTTP/2 (h2c) on loopback for restate-server to invoke. Prints its
// port on its first line of stdout, then serves until SIGTERM/SIGINT.
//
//     node bench/peers/restate_service.js --echo 127.0.0.1:ECHO_PORT [--port 0]
'use strict';

const http2 = require('http2');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const restate = require('@restatedev/restate-sdk');

const CALL_TIMEOUT_MS = 10000;

// @restatedev/restate-sdk 1.17 calls Promise.withResolvers (ES2024), which Node 20 lacks (it
// came with Node 22); this is the specification's behaviour, for Node 20 only.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers() {
    let resolve;
    let reject;
    const promise = new this((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };
}

function echoClient(target) {
  const definition = protoLoader.loadSync(path.join(__dirname, 'echo.proto'), { keepCase: true, defaults: true });
  const { EchoService } = grpc.loadPackageDefinition(definition).bench.peers.v1;
  const client = new EchoService(target, grpc.credentials.createInsecure());
  return (request) =>
    new Promise((resolve, reject) => {
      const deadline = new Date(Date.now() + CALL_TIMEOUT_MS);
      client.Echo(request, { deadline }, (err, reply) => {
        if (err) reject(err);
        else resolve({ text: reply.text, n: reply.n }); // a plain object: ctx.run journals it as JSON
      });
    });
}

function main() {
  const args = process.argv.slice(2);
  const arg = (name, fallback) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);
  const echoTarget = arg('--echo');
  if (!echoTarget) {
    console.error('restate_service: --echo HOST:PORT is required');
    process.exit(2);
  }
  const port = Number(arg('--port', '0'));
  const echo = echoClient(echoTarget);

  const echo3 = restate.service({
    name: 'Echo3',
    handlers: {
      run: async (ctx, input) => {
        let reply = { text: input.text, n: input.n };
        for (const step of ['one', 'two', 'three']) {
          const request = reply;
          reply = await ctx.run(step, () => echo(request));
        }
        return reply;
      },
    },
  });

  const server = http2.createServer(restate.endpoint().bind(echo3).http2Handler());
  server.on('error', (err) => {
    console.error(`restate_service: ${err.message}`);
    process.exit(1);
  });
  server.listen(port, '127.0.0.1', () => process.stdout.write(`${server.address().port}\n`));
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => process.exit(0));
  }
}

main();
