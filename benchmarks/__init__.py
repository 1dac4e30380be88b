"""catdog's benchmark suite: ``python -m benchmarks [NAME ...] [--quick]``."""
