"""Where a Quick Start run stands, kept in the store's meta table so a restarted console resumes.

Only the step index and the names chosen are kept — never a credential or a consumer key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from store import repo
from store.db import Store

META_KEY = "quickstart"

#: The wizard's steps: (table the step writes, or "" for the last one; indicator label).
STEPS: tuple[tuple[str, str], ...] = (
    ("model_keys", "Model Key"),
    ("model_services", "Model Service"),
    ("model_apis", "Model API"),
    ("consumers", "Consumer"),
    ("consumer_groups", "Consumer Group"),
    ("", "Invoke"),
)
LAST = len(STEPS) - 1

#: ``InvokeResult.step`` (a table name, or ``gateway``) → the wizard step that fixes it.
FIX_STEP: dict[str, int] = {table: i for i, (table, _) in enumerate(STEPS) if table}
FIX_STEP["gateway"] = LAST


@dataclass
class Progress:
    """``step`` is 0-based; ``names`` maps a table to the entity this run created or picked."""

    step: int = 0
    names: dict[str, str] = field(default_factory=dict)
    done: bool = False

    def to_json(self) -> str:
        return json.dumps({"step": self.step, "names": self.names, "done": self.done}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Progress:
        """Anything unreadable starts a fresh run rather than breaking the console."""
        try:
            data = json.loads(text) if text else {}
            step = int(data.get("step", 0))
            names = {
                str(k): str(v)
                for k, v in dict(data.get("names") or {}).items()
                if k in FIX_STEP and k != "gateway" and v
            }
            return cls(step=min(max(step, 0), LAST), names=names, done=bool(data.get("done", False)))
        except (ValueError, TypeError, AttributeError):
            return cls()


def load_progress(store: Store) -> Progress:
    with store.session() as s:
        return Progress.from_json(repo.get_meta(s, META_KEY))


def save_progress(store: Store, progress: Progress) -> None:
    with store.session() as s:
        repo.set_meta(s, META_KEY, progress.to_json())
