"""The fleet view: every shop's state for the chain's support, and ``/metrics`` for its Prometheus."""
