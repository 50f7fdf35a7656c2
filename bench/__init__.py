"""Benchmarks that print figures (``make bench``); not run as tests."""
