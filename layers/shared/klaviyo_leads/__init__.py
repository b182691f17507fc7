"""Klaviyo lead actions: the shared layer behind every function of the bundle.

Modules, from the outside in:

- ``entrypoint``: ``handler_for(action)``, the Lambda handler every function binds.
- ``triggers``: event shapes in (API Gateway, SQS, EventBridge, direct), results out.
- ``actions``: the six actions, one small function each.
- ``lead``: parsing and normalising the flat lead record.
- ``fields``: the field-mapping table (lead -> Klaviyo, Klaviyo profile -> result).
- ``klaviyo``: the HTTP client (auth, revision, retries, time budget, error envelope).
- ``outcomes``: outcome, reason and retryability of everything that can happen.
"""
