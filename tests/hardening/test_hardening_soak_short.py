"""A 25-second soak (the runner ``tests/hardening/soak.py`` for minutes): marked slow, off by default."""

from __future__ import annotations

import pytest
import soak


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_short_soak() -> None:
    result = soak.run(duration=25, workers=4, change_every=3.0, sample_every=5.0)
    failed = {k: v for k, v in result["verdict"].items() if not v}
    assert result["passed"], (failed, result["first_errors"], result["config_changes_late_or_failed"])
    assert result["requests_ok"] > 100 and result["config_changes"] >= 3
