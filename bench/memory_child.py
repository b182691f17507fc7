"""Peak memory of one interpreter: import a handler, optionally run one SQS batch through it.

Run as ``python bench/memory_child.py <handler.py> [<event.json>]`` by ``bench.memory``, in
a fresh interpreter with the function's environment. Prints one line
``MEMORY-RESULT {json}``: ``ru_maxrss`` (peak resident set) and ``VmHWM`` after the import
and, with an event, after the batch, in MB, plus what the batch answered.
"""

import importlib
import json
import os
import resource
import sys

from cold_child import Context

MARKER = "MEMORY-RESULT "


def peak_mb() -> float:
    # Linux reports ru_maxrss in kilobytes.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def hwm_mb() -> float | None:
    """This process image's own peak RSS (VmHWM): unlike ru_maxrss, it starts anew at exec."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def main() -> int:
    handler_dir, file_name = os.path.split(os.path.abspath(sys.argv[1]))
    sys.path.insert(0, handler_dir)
    handler = importlib.import_module(file_name.removesuffix(".py")).lambda_handler
    report: dict[str, object] = {"after_import_mb": peak_mb(), "after_import_hwm_mb": hwm_mb()}
    if len(sys.argv) > 2:
        with open(sys.argv[2], encoding="utf-8") as source:
            event = json.load(source)
        action = os.path.basename(handler_dir)
        response = handler(event, Context(f"klaviyo-lead-actions-{action.replace('_', '-')}"))
        report["after_batch_mb"] = peak_mb()
        report["after_batch_hwm_mb"] = hwm_mb()
        report["records"] = len(event["Records"])
        report["handed_back"] = len(response.get("batchItemFailures", []))
    print(MARKER + json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
