"""The load driver of the peer benchmark for Temporal: starts Echo3 workflows and waits for
their results, with the Temporal Python SDK's client. driver.js is the same driver in Node for
the other systems; both measure with the same logic (measure.py / measure.js).

Prints one JSON object on stdout (the result), progress on stderr.

    python temporal_driver.py --system temporal --target 127.0.0.1:7233 --pids PID,PID [...]
"""

import asyncio
import json
import os
import sys
import uuid
from datetime import timedelta

from temporalio.client import Client

from measure import measure, parse_args
from temporal_workflow import TASK_QUEUE, Echo, Echo3

# One run of every system: three chained calls starting from this input, which must come back
# as the same text with n + 3.
INPUT = Echo(text="peers", n=0)


async def main():
    opts = parse_args(sys.argv[1:], systems=["temporal"])
    client = await Client.connect(opts.target, namespace="default")
    timeout = timedelta(milliseconds=opts.run_timeout_ms)

    async def run():
        result = await client.execute_workflow(
            Echo3.run,
            INPUT,
            id=f"peers-{uuid.uuid4()}",
            task_queue=TASK_QUEUE,
            execution_timeout=timeout,
        )
        if result.text != INPUT.text or result.n != INPUT.n + 3:
            raise RuntimeError(f"unexpected result {result}")

    print(json.dumps(await measure(run, opts)), flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as err:  # noqa: BLE001 -- reported as the driver's failure
        print(f"driver: {err}", file=sys.stderr, flush=True)
        os._exit(1)
    # Leave without the interpreter's teardown: the SDK's native runtime has been seen to crash
    # (SIGSEGV) in it, after the result was written, which would read as a failed driver.
    os._exit(0)
