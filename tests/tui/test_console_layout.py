"""The console keeps one version of each thing: checked on the source, so a second copy fails here."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

from textual.widget import Widget

TUI = Path(__file__).resolve().parents[2] / "tui"


def sources() -> dict[str, str]:
    return {str(p.relative_to(TUI)): p.read_text() for p in TUI.rglob("*.py")}


def defined(name: str) -> list[str]:
    return [
        f
        for f, text in sources().items()
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == name
    ]


def test_widgets_holds_only_widgets() -> None:
    for path in (TUI / "widgets").glob("*.py"):
        if path.name == "__init__.py":
            continue
        module = importlib.import_module(f"tui.widgets.{path.stem}")
        classes = [c for _, c in inspect.getmembers(module, inspect.isclass) if c.__module__ == module.__name__]
        assert any(issubclass(c, Widget) for c in classes), f"tui/widgets/{path.name} defines no widget"


def test_one_of_each() -> None:
    assert defined("record_key") == ["data/traffic_feed.py"]
    # One /events reconnect loop: EventSource is opened only by follow_loop.
    opened = [f for f, text in sources().items() if "EventSource(" in text.replace("class EventSource(", "")]
    assert opened == ["follow.py"]
    assert not defined("iter_events") and "_attached_pid" not in sources()["gateway_process.py"]
    # Quick Start keeps no key memory of its own and starts the gateway through the app.
    qs = "".join(t for f, t in sources().items() if f.startswith("screens/quickstart/"))
    assert "plain_key" not in qs and "self.gateway.start(" not in qs
    # Fields are declared in tui/fields.py: forms and steps build no FormField by hand.
    for f, text in sources().items():
        if (f.endswith("_form.py") and f != "modals/gateway_form.py") or (f.endswith("_step.py") and "invoke" not in f):
            assert "FormField(" not in text, f
    assert (TUI / "modals" / "route_management.py").exists() and not (TUI / "screens" / "api_detail.py").exists()
