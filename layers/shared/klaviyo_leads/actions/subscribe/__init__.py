"""actions.subscribe."""
