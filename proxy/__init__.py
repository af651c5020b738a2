"""The gateway: the data plane (its own HTTP/1.1 layer on asyncio + llhttp) and the admin
listener (aiohttp). Never imports Textual."""

# First, before any module of the request path is imported: compiled, or from source.
from . import native as native
