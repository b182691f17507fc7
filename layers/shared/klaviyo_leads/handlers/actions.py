"""``handler_for(action)``: the Lambda handler each function binds, and nothing else."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from klaviyo_leads.actions.table import ACTIONS
from klaviyo_leads.observability import flush_counts, logger, metrics, quiet_libraries
from klaviyo_leads.runtime import Runtime
from klaviyo_leads.triggers.dispatch import handle

Handler = Callable[[Any, Any], Any]

_runtime: Runtime | None = None


def runtime() -> Runtime:
    """The container's runtime, built from the environment on first use."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime.from_env()
    return _runtime


def reset_runtime(replacement: Runtime | None = None) -> None:
    """Forget (or replace) the container's runtime: for tests and the local runner."""
    global _runtime
    _runtime = replacement


def handler_for(action_name: str, runtime_of: Callable[[], Runtime] | None = None) -> Handler:
    """The function's handler; ``runtime_of`` gives the container's runtime (the process's
    own, built from the environment, unless a fleet simulation runs many containers)."""
    action = ACTIONS[action_name]
    quiet_libraries()
    current = runtime_of or runtime

    def lambda_handler(event: Any, lambda_context: Any) -> Any:
        # Powertools keeps default dimensions across invocations; set it only when it
        # changes (never, in Lambda: a container runs one function).
        if metrics.default_dimensions.get("action") != action.name:
            metrics.set_default_dimensions(action=action.name)
        try:
            return handle(current(), action, event, lambda_context)
        finally:
            flush_counts()

    handler: Handler = logger.inject_lambda_context(clear_state=True)(lambda_handler)
    handler = metrics.log_metrics(capture_cold_start_metric=True)(handler)
    if os.environ.get("POWERTOOLS_TRACE_DISABLED", "true").lower() in {"false", "0"}:
        # Tracer costs ~250 ms of cold start even when disabled: only load it when asked.
        from aws_lambda_powertools import Tracer

        handler = Tracer().capture_lambda_handler(capture_response=False)(handler)
    return handler
