"""Implementations of the ``tautune`` subcommands, one module per group."""
