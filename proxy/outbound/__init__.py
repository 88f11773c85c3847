"""The outbound face: the Graph-compatible gateway, the Block Users API, paced uploads."""
