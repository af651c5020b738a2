"""The gateway: the data plane (its own HTTP/1.1 layer on asyncio + llhttp) and the admin
listener (aiohttp). Never imports Textual."""
