"""Benchmarks: measured side by side in one run, printed as numbers and ratios."""
