"""HyperFork: clone started USFs copy-on-write, roll them back, snapshot them to disk."""

from .protocol import HyperForkError, ProtocolError
from .template import Clone, Template

__all__ = ["Clone", "HyperForkError", "ProtocolError", "Template"]
