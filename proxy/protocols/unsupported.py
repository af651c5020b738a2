"""The one refusal every translation raises for what the target protocol cannot honour."""

from __future__ import annotations


class UnsupportedParameter(ValueError):
    """A request field the translation cannot carry over. The gateway answers 400
    ``unsupported_parameter`` in the client's protocol, naming ``param``."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message
