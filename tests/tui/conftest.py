"""Console test fixtures; ``pilot_helpers.wait_until`` is the bounded wait for thread workers."""

from __future__ import annotations
