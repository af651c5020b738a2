"""The performance benchmark of issue 8: ``python -m tests.bench`` (see README "Performance")."""
