"""The simulator tests use the same fixtures as the destination tests."""

from tests.destinations.conftest import secret_file, serve_sim

__all__ = ["secret_file", "serve_sim"]
