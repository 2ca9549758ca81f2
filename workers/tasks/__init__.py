"""Small real training tasks built from what a Python install carries (no downloads)."""
