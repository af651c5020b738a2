"""The gateway's data plane and admin listener (aiohttp). Never imports Textual."""
