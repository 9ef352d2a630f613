"""The HTTP face of :mod:`explain`: ``create_app(settings)`` builds the FastAPI app."""

from service.app import create_app
from service.settings import Settings

__all__ = ["Settings", "create_app"]
