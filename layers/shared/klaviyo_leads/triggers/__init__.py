"""The triggers: which one an event is (``dispatch``, with the table of them), and each:
API Gateway (``api``), SQS (``sqs``), EventBridge and direct invocations (``invocations``)."""
