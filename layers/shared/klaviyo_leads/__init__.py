"""Klaviyo lead actions: the shared layer behind every function of the bundle.

From the outside in: ``entrypoint`` (the handler every function binds), ``triggers`` and
``sqs`` (event shapes in, results out), ``actions`` with ``subscribe`` and ``events`` (what
each action does), ``lead``, ``fields`` and ``phone`` (reading the lead), ``klaviyo`` (the
HTTP client and its pacer) and ``outcomes`` (every result and reason). docs/architecture.md
shows the data path and which module owns each step.
"""
