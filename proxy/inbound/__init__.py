"""The inbound face: the webhook receiver and its replay guard."""
