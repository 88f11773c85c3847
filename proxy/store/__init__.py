"""Redis, one module per concern, each importing only those below it.

``schema`` (key names, block entries) and ``scripts`` (the Lua script of every change) at the bottom; ``blocks`` (the
store's operations) over them; ``embedded`` (the embedded redis-server); ``client`` (opening the store from a URL or
the embedded server); ``sync_queue`` (the Meta sync queue) and ``cache`` (the exact local check cache) beside them.
"""
