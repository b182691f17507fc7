"""actions.create."""
