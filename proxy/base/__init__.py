"""The ground floor: one exception hierarchy, logging, background tasks, body reading, text helpers.

Nothing here reads the config or Redis.
"""
