"""The Temporal worker of the peer benchmark: runs workflow Echo3 and activity `echo`, which
calls the grpc-js echo backend (bench.peers.v1.EchoService/Echo) with grpcio.

Prints `ready` on stdout once polling, then works until SIGTERM/SIGINT.

    python temporal_worker.py --temporal 127.0.0.1:7233 --echo 127.0.0.1:ECHO_PORT
"""

import argparse
import asyncio
import signal

import grpc
from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

import echo_pb2  # generated from echo.proto by setup.sh, into .deps/gen
import echo_pb2_grpc
from temporal_workflow import TASK_QUEUE, Echo, Echo3

CALL_TIMEOUT_S = 10


class EchoActivities:
    def __init__(self, echo_target):
        self._channel = grpc.aio.insecure_channel(echo_target)
        self._stub = echo_pb2_grpc.EchoServiceStub(self._channel)

    @activity.defn(name="echo")
    async def echo(self, message: Echo) -> Echo:
        reply = await self._stub.Echo(echo_pb2.EchoRequest(text=message.text, n=message.n), timeout=CALL_TIMEOUT_S)
        return Echo(text=reply.text, n=reply.n)


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--temporal", required=True, help="host:port of the Temporal frontend")
    parser.add_argument("--echo", required=True, help="host:port of the echo backend")
    args = parser.parse_args()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    client = await Client.connect(args.temporal, namespace="default")
    activities = EchoActivities(args.echo)
    async with Worker(client, task_queue=TASK_QUEUE, workflows=[Echo3], activities=[activities.echo]):
        print("ready", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
