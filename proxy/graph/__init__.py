"""WhatsApp's and Meta's vocabulary, pure (no server, no Redis).

Graph errors, request classification, identities, webhook payloads, signatures, opt-out words; shared with the plugins.
"""
