"""One cold start: import a Lambda handler, answer one event, report the times, exit.

Run as ``python bench/cold_child.py <handler.py> <event.json>`` by ``bench.coldstart``, in
a fresh interpreter whose environment is the function's (``PYTHONPATH`` holding the layer,
as Lambda puts layers on the path). Prints one line ``COLD-START-RESULT {json}`` with
seconds since this script's first line: after the bootstrap (event read), after the handler
module's import, and after the first answer.
"""

import time

STARTED = time.perf_counter()  # first statement after the docstring: our t = 0


import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

MARKER = "COLD-START-RESULT "


class Context:
    """The Lambda context's attributes a handler and Powertools read."""

    function_version = "$LATEST"
    memory_limit_in_mb = 256
    aws_request_id = "00000000-0000-4000-8000-000000000000"

    def __init__(
        self,
        function_name: str = "klaviyo-lead-actions-create-profile",
        timeout_seconds: float = 360.0,
    ) -> None:
        self.function_name = function_name
        self.invoked_function_arn = (
            f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        )
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "2026/01/01/[$LATEST]00000000000000000000000000000000"
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def main() -> int:
    handler_path, event_path = sys.argv[1], sys.argv[2]
    handler_dir, file_name = os.path.split(os.path.abspath(handler_path))
    sys.path.insert(0, handler_dir)
    with open(event_path, encoding="utf-8") as source:
        event = json.load(source)
    bootstrapped = time.perf_counter()
    handler = importlib.import_module(file_name.removesuffix(".py")).lambda_handler
    imported = time.perf_counter()
    response = handler(event, Context())
    answered = time.perf_counter()
    report = {
        "bootstrap_s": bootstrapped - STARTED,
        "import_s": imported - bootstrapped,
        "first_answer_s": answered - imported,
        "total_s": answered - STARTED,
        "status": response.get("statusCode"),
        "body": response.get("body"),
    }
    print(MARKER + json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
