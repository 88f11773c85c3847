"""wa-blocklist-proxy: a blocklist gateway between WhatsApp contact centers and Meta's Cloud API."""

__version__ = "0.1.0"
