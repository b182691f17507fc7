"""How retryable leads are grouped for SendMessageBatch."""

from __future__ import annotations

from klaviyo_leads.aws.queue import MAX_BATCH, MAX_BATCH_BYTES, Later, batches


def test_ten_to_a_batch_in_order():
    later = [Later({"email": f"{i}@example.com"}, 0.0) for i in range(23)]
    grouped = batches(later)
    assert [len(b) for b in grouped] == [MAX_BATCH, MAX_BATCH, 3]
    assert [item for batch in grouped for item in batch] == later


def test_large_leads_share_a_batch_only_within_the_size_limit():
    big = "x" * (MAX_BATCH_BYTES // 3)
    later = [Later({"note": big, "n": i}, 0.0) for i in range(7)]
    grouped = batches(later)
    assert [len(b) for b in grouped] == [2, 2, 2, 1]
    assert all(sum(len(str(i.lead)) for i in b) <= MAX_BATCH_BYTES for b in grouped)
