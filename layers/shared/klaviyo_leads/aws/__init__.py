"""The AWS services the functions use: the create ledger, idempotency records, the action's
queue, the results bus and store, the Klaviyo key in Secrets Manager. Clients are made on
first use."""
