"""Drop-in plugins that make bots honour the proxy's blocklist, with or without the proxy in front of Meta.

One module per framework (``pywa``, ``botframework``, ``asgi``, ``aiohttp_webhook``, ``aiohttp_client``,
``httpx_transport``), all built on :class:`wa_blocklist.plugins.client.BlocklistClient`, which uses the proxy's own
``BlocklistService`` over its store (direct mode) or the proxy's admin API (HTTP mode). Framework packages are
optional extras: importing ``plugins`` imports none of them.
"""
