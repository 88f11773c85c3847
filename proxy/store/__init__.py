"""Redis: the key schemas and Lua scripts of every change, the client and the embedded server, the local check cache."""
