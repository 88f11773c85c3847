"""The admin face: JSON API under ``/admin/api/`` and the web page at ``/admin/``."""

from .app import create_admin_app

__all__ = ["create_admin_app"]
