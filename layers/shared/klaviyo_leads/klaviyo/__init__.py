"""Klaviyo's API as the bundle calls it: one pooled client per container, its in-call retry
policy, the pacer that keeps a fleet inside the rate limits, and the route table that names
each operation."""
