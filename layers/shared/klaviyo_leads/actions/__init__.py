"""The actions: one module per action (a folder for Create and Subscribe) with its one-lead
path and, where Klaviyo has a bulk call, its batch path; ``table`` is the one registry."""
