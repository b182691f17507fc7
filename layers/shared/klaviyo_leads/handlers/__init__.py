"""Every Lambda entry point, one module per kind of function, so that each function imports
only what it runs (cold start)."""
