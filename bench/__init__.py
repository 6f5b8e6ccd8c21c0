"""Benchmarks of trainledger: `python -m bench` (see bench/README.md)."""
