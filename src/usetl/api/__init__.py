"""The HTTP gateway: a FastAPI app over `usetl.platform.service.Platform`."""

from .app import create_app

__all__ = ["create_app"]
