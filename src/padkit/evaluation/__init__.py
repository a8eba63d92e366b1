"""Evaluation: benchmarks (speed) and, later, the judged comparison harness."""
