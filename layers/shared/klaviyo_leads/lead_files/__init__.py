"""Lead files: a CSV or JSON Lines file of leads, checked, queued, and answered by a results file.

An object under ``<action>/`` in the lead-files bucket is a file of leads for that action;
under ``dry-run/<action>/`` it is only checked. The splitter reads the file twice, streaming:
first every row is checked as the webhook would check it (the same parsing, and the action run
up to its first Klaviyo call) and ``results/<key>.report.json`` is written; only then are the
rows put on the action's queue, ten to a ``SendMessageBatch``, each message naming its file run
and row. Which message each row got goes into the run's manifest, checkpointed as it is sent.

The assembler (on a schedule) reads each open run's manifest, looks the rows' results up in the
results table (by file run and row, where the queue path keeps them 24 h), updates
``results/<key>.progress.json`` and, once every row has a final result, streams
``results/<key>.results.csv`` (or ``.jsonl``) in the input's order and publishes a
``lead file finished`` event. A row still without a result when it must have left the queue
(dead-lettered) gets an error saying so. Everything the stack writes is under ``results/``.
"""
