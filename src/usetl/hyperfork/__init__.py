"""HyperFork: clone started USFs copy-on-write, roll them back, snapshot them to disk."""

from .ipc import HyperForkError
from .template import Clone, Template

__all__ = ["Clone", "HyperForkError", "Template"]
