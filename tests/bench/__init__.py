"""The performance benchmark: ``python -m tests.bench`` (see README "Performance")."""
