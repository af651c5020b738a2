"""JSON bytes sized to their content, for bodies kept while a request is in flight or in the cache.

orjson hands back its write buffer as the bytes object without shrinking it: a 60-byte
body holds a 4 KiB allocation (more for larger ones, the buffer doubling as it grows).
Written at once and dropped, that costs nothing; kept for the whole of a slow request
(the body sent to the vendor, held for a retry on another key) or in the response
cache, it was 4 KiB of resident memory per request. One copy to the exact size is far
cheaper than the encoding itself.
"""

from __future__ import annotations

from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    """``orjson.dumps(value)``, copied into a bytes object of its own length."""
    return bytes(memoryview(orjson.dumps(value)))
