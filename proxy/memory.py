"""Hand freed heap back to the operating system after the gateway let go of a lot at once.

glibc's allocator keeps freed memory in the process for reuse; Python's objects above
512 bytes (cached answers, stream buffers) come from it. Freed in the middle of the heap,
that memory stays in the process's RSS until something trims it, so a cleared response
cache of 50 MB still showed as 50 MB more RSS than before it filled. ``malloc_trim``
returns the free pages (``madvise``), whatever their place in the heap. It walks the
whole heap, so it is called only after a large release (a cache cleared or an API's
answers dropped), never on the request path. Where the C library is not glibc (musl,
macOS) there is nothing to call and :func:`give_back` does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from functools import cache

log = logging.getLogger("aigw.proxy")


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    fn: Callable[[int], int] = trim
    return fn


def can_give_back() -> bool:
    """Whether this C library lets the process return freed heap."""
    return _malloc_trim() is not None


def give_back() -> bool:
    """Return the heap's free pages to the system; whether any were returned."""
    trim = _malloc_trim()
    if trim is None:
        return False
    try:
        return bool(trim(0))
    except OSError as exc:  # never fatal: the memory is only held longer
        log.debug("malloc_trim failed: %s", exc)
        return False
