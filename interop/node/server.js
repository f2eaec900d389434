// A Node @grpc/grpc-js backend for Nexus's interop tests: interop.v1.InteropService loaded with
// @grpc/proto-loader, stock reflection from @grpc/reflection (v1 and v1alpha), rich error
// details in grpc-status-details-bin. Prints its port on its first line of stdout, then serves
// until stdin closes or it is killed.
//
//     node interop/node/server.js [--port 0]
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { ReflectionService } = require('@grpc/reflection');
const protobuf = require('protobufjs');

const SERVER = 'grpc-js';
const PROTO_DIR = path.join(__dirname, '..', 'proto');

const definition = protoLoader.loadSync('interop/v1/interop.proto', {
  includeDirs: [PROTO_DIR],
  keepCase: true,
  longs: String,
  defaults: true,
});
const InteropService = grpc.loadPackageDefinition(definition).interop.v1.InteropService;

const rpc = protobuf.loadSync(path.join(__dirname, 'proto', 'google', 'rpc', 'status.proto'));
const Status = rpc.lookupType('google.rpc.Status');
const ErrorInfo = rpc.lookupType('google.rpc.ErrorInfo');

function header(call, key) {
  const values = call.metadata.get(key);
  return values.length ? String(values[0]) : '';
}

const calls = new Map();

const handlers = {
  Echo(call, callback) {
    const r = call.request;
    callback(null, { text: r.text, server: SERVER, attributes: r.attributes, sent_at: r.sent_at, labels: r.labels });
  },

  Count(call) {
    const { count, interval_ms: interval } = call.request;
    let i = 0;
    const next = () => {
      if (call.cancelled) return;
      if (i >= count) {
        call.end();
        return;
      }
      call.write({ index: i, text: `${SERVER} ${i}` });
      i += 1;
      setTimeout(next, i < count ? interval : 0);
    };
    next();
  },

  Fail(call, callback) {
    const { code, message } = call.request;
    const info = ErrorInfo.encode({ reason: 'INTEROP_FAILURE', domain: 'interop.nexus', metadata: { server: SERVER } }).finish();
    const status = Status.encode({
      code,
      message,
      details: [{ type_url: 'type.googleapis.com/google.rpc.ErrorInfo', value: info }],
    }).finish();
    const md = new grpc.Metadata();
    md.set('grpc-status-details-bin', Buffer.from(status));
    callback({ code, details: message, metadata: md });
  },

  Flaky(call, callback) {
    const key = header(call, 'nexus-idempotency-key');
    const n = (calls.get(key) || 0) + 1;
    calls.set(key, n);
    if (n <= call.request.failures) {
      callback({ code: grpc.status.UNAVAILABLE, details: `${SERVER}: failing call ${n} of ${call.request.failures}` });
      return;
    }
    callback(null, { attempts: n, idempotency_key: key });
  },

  Inspect(call, callback) {
    const deadline = call.getDeadline();
    const at = deadline instanceof Date ? deadline.getTime() : Number(deadline);
    const hasDeadline = Number.isFinite(at);
    callback(null, {
      idempotency_key: header(call, 'nexus-idempotency-key'),
      traceparent: header(call, 'traceparent'),
      has_deadline: hasDeadline,
      deadline_remaining_ms: hasDeadline ? String(Math.max(0, Math.round(at - Date.now()))) : '0',
      server: SERVER,
    });
  },
};

function main() {
  const args = process.argv.slice(2);
  const portArg = args.indexOf('--port');
  const port = portArg >= 0 ? Number(args[portArg + 1]) : 0;

  const server = new grpc.Server();
  server.addService(InteropService.service, handlers);
  new ReflectionService(definition).addToServer(server);
  server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, bound) => {
    if (err) {
      console.error(`cannot bind: ${err.message}`);
      process.exit(1);
    }
    process.stdout.write(`${bound}\n`);
  });
  // The test holds our stdin: when it goes away (even killed), so do we.
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}

main();
