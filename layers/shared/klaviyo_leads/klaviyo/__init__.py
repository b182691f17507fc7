"""klaviyo."""
