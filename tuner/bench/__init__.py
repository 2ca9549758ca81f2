"""Benchmarks: ``tautune bench TASK`` runs methods side by side on a real task and writes JSON."""
