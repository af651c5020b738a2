"""How a vendor call fails: the exceptions the vendor client raises and the relay maps to
answers (``reason`` labels ``aigw_upstream_errors_total``; ``code`` is the 502's).

A module of their own, left as Python when the request path is compiled: a few of them
have two bases (a timeout is also a ``TimeoutError``; a TLS failure is a connect failure
whose message explains itself), which compiled classes cannot have.
"""

from __future__ import annotations


class UpstreamError(Exception):
    """A vendor call that failed; ``reason`` is the ``aigw_upstream_errors_total`` label."""

    reason = "broken"


class ConnectFailed(UpstreamError):
    reason = "connect"


class ConnectTimeout(UpstreamError):
    reason = "connect_timeout"


class ReadTimeout(UpstreamError, TimeoutError):
    reason = "timeout"


class FirstByteTimeout(ReadTimeout):
    """Not one byte of the answer within the service's ``first_byte_timeout_s``."""

    reason = "first_byte_timeout"


class Disconnected(UpstreamError):
    """The vendor closed the connection or broke the framing."""


class VendorFault(UpstreamError):
    """A failure the message explains in full: what went wrong and what to check.

    The relay shows the message as it is (after the service's name), so it must never
    hold a credential.
    """

    #: The OpenAI error ``code`` of the 502.
    code = "upstream_error"

    def __init__(self, message: str, reason: str = "bad_answer") -> None:
        super().__init__(message)
        self.reason = reason


class TLSFailed(VendorFault, ConnectFailed):
    """The vendor's certificate was refused, or the TLS handshake failed."""

    code = "upstream_unreachable"

    def __init__(self, message: str) -> None:
        super().__init__(message, "tls")


class ProxyFailed(VendorFault, ConnectFailed):
    """The forward proxy could not be reached, or refused to carry the call."""

    code = "upstream_unreachable"

    def __init__(self, message: str) -> None:
        super().__init__(message, "proxy")
