"""Metrics: one EMF document per invocation with the counts, whatever the batch size."""

from __future__ import annotations

import json

from devtools.lambda_events import LambdaContext, load_handler, queue_arn, sqs_event, sqs_message
from klaviyo_leads.observability import metrics


def test_a_batch_writes_one_document_with_counts(runtime, klaviyo_emulator, capsys, monkeypatch):
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    metrics.clear_metrics()  # values other tests left unwritten in this process
    list_id = klaviyo_emulator.create_list("Newsletter")
    messages = [
        sqs_message(json.dumps({"email": f"m{i}@example.com", "klaviyo.list_id": list_id}))
        for i in range(150)
    ]
    messages.append(sqs_message(json.dumps({"email": "broken"})))
    handler = load_handler("subscribe_profile_to_list")
    capsys.readouterr()
    handler(sqs_event(messages, queue_arn("q")), LambdaContext.for_action("x"))
    documents = [
        json.loads(line)
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("{") and '"_aws"' in line
    ]
    counts = [d for d in documents if "LeadSucceeded" in d]
    assert len(counts) == 1
    assert counts[0]["LeadSucceeded"] == [150.0]
    assert counts[0]["LeadFailed"] == [1.0]
    assert counts[0]["LeadsReceived"] == [151.0]
    assert counts[0]["KlaviyoCalls"] == [float(klaviyo_emulator.calls())]
    assert counts[0]["action"] == "subscribe_profile_to_list"
