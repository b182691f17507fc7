"""Klaviyo lead actions: the shared layer behind every function of the bundle.

From the outside in: ``handlers`` (every Lambda entry point), ``triggers`` (event shapes in,
results out), ``runtime`` (the container's wiring; one lead, one batch), ``actions`` (each
action's one-lead and batch paths, and the action table), ``lead`` (reading a lead), ``klaviyo``
(the client, its retry policy and pacer, the routes), ``aws`` (the AWS services the functions
use), ``lead_files``, ``mirror`` and ``trail`` (the operators' features), ``outcomes`` (every
result and reason). docs/architecture.md shows the tree and walks one lead through it.
"""
