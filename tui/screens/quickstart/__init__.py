"""Quick Start: six steps as a wizard (one module per step; ``screen`` ties them together)."""

from __future__ import annotations

from .screen import QuickStartScreen

__all__ = ["QuickStartScreen"]
