"""wa-blocklist-proxy: a blocklist gateway for WhatsApp Cloud API contact centers.

The distribution's one import namespace: ``wa_blocklist.proxy`` (the proxy service) and ``wa_blocklist.plugins``
(the bot-framework plugins). The repository keeps them as the top-level ``proxy/`` and ``plugins/`` folders; this
package maps them under one name so that a bot project's own ``plugins/`` or ``proxy/`` folder never collides.
"""
