"""The Temporal side of the peer benchmark: workflow `Echo3`, three chained `echo` activities.

Kept free of anything but temporalio: the workflow sandbox re-imports this module for every
run. The activity lives in temporal_worker.py, called here by name.
"""

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow

TASK_QUEUE = "peers-echo3"


@dataclass
class Echo:
    """EchoRequest and EchoReply of echo.proto, as the workflow's and the activity's payload."""

    text: str
    n: int


@workflow.defn(name="Echo3")
class Echo3:
    @workflow.run
    async def run(self, message: Echo) -> Echo:
        for _ in range(3):
            message = await workflow.execute_activity(
                "echo",
                message,
                result_type=Echo,
                start_to_close_timeout=timedelta(seconds=10),
            )
        return message
