"""A Python grpcio backend for Nexus's interop tests: interop.v1.InteropService with grpcio's stock
reflection (grpcio-reflection, which serves grpc.reflection.v1alpha only) and rich error details
from grpcio-status. Prints its port on its first line of stdout, then serves until stdin closes
or it is killed.

    .interop/venv/bin/python interop/python/server.py [--port 0] [--reflection v1alpha|none]
"""

import argparse
import os
import sys
import threading
import time
from concurrent import futures

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto")
sys.path.insert(0, PROTO_DIR)
# Compiles the .proto at start (grpcio-tools bundles protoc and the well-known types), so no
# generated code is kept anywhere.
protos, services = grpc.protos_and_services("interop/v1/interop.proto")

SERVER = "grpcio"


def metadata(context, key):
    for k, v in context.invocation_metadata():
        if k == key:
            return v
    return ""


class Interop(services.InteropServiceServicer):
    def __init__(self):
        self._lock = threading.Lock()
        self._calls = {}

    def Echo(self, request, context):
        return protos.EchoReply(
            text=request.text,
            server=SERVER,
            attributes=request.attributes,
            sent_at=request.sent_at,
            labels=request.labels,
        )

    def Count(self, request, context):
        for i in range(request.count):
            if i and request.interval_ms:
                time.sleep(request.interval_ms / 1000)
            yield protos.CountReply(index=i, text=f"{SERVER} {i}")

    def Fail(self, request, context):
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.ErrorInfo(
                reason="INTEROP_FAILURE", domain="interop.nexus", metadata={"server": SERVER}
            )
        )
        context.abort_with_status(
            rpc_status.to_status(
                status_pb2.Status(code=request.code, message=request.message, details=[detail])
            )
        )

    def Flaky(self, request, context):
        key = metadata(context, "nexus-idempotency-key")
        with self._lock:
            n = self._calls.get(key, 0) + 1
            self._calls[key] = n
        if n <= request.failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{SERVER}: failing call {n} of {request.failures}")
        return protos.FlakyReply(attempts=n, idempotency_key=key)

    def Inspect(self, request, context):
        remaining = context.time_remaining()
        return protos.InspectReply(
            idempotency_key=metadata(context, "nexus-idempotency-key"),
            traceparent=metadata(context, "traceparent"),
            has_deadline=remaining is not None,
            deadline_remaining_ms=int(remaining * 1000) if remaining is not None else 0,
            server=SERVER,
        )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--reflection", choices=["v1alpha", "none"], default="v1alpha")
    args = parser.parse_args()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    services.add_InteropServiceServicer_to_server(Interop(), server)
    if args.reflection == "v1alpha":
        names = (
            protos.DESCRIPTOR.services_by_name["InteropService"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, server)
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print(port, flush=True)
    # The test holds our stdin: when it goes away (even killed), so do we.
    sys.stdin.read()
    server.stop(0)


if __name__ == "__main__":
    main()
