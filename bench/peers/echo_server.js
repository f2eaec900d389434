// The echo backend of the peer benchmark: bench.peers.v1.EchoService on @grpc/grpc-js, with
// stock server reflection (@grpc/reflection) so that Nexus discovers it like any backend.
// Echo answers the same text and n + 1. Prints its port on its first line of stdout, then
// serves until SIGTERM/SIGINT.
//
//     node bench/peers/echo_server.js [--port 0]
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { ReflectionService } = require('@grpc/reflection');

const definition = protoLoader.loadSync(path.join(__dirname, 'echo.proto'), {
  keepCase: true,
  defaults: true,
});
const { EchoService } = grpc.loadPackageDefinition(definition).bench.peers.v1;

function main() {
  const args = process.argv.slice(2);
  const portArg = args.indexOf('--port');
  const port = portArg >= 0 ? Number(args[portArg + 1]) : 0;

  const server = new grpc.Server();
  server.addService(EchoService.service, {
    Echo(call, callback) {
      callback(null, { text: call.request.text, n: call.request.n + 1 });
    },
  });
  new ReflectionService(definition).addToServer(server);
  server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, bound) => {
    if (err) {
      console.error(`echo_server: cannot bind 127.0.0.1:${port}: ${err.message}`);
      process.exit(1);
    }
    process.stdout.write(`${bound}\n`);
  });
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => server.tryShutdown(() => process.exit(0)));
  }
}

main();
