"""Benchmarks and reproductions of torch-tickets (run with ``python -m benchmarks.<name>``)."""
