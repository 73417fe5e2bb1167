"""The root of usetl's typed errors: each layer raises its own subclass."""


class UsetlError(Exception):
    """An error with a message fit to show a user as one line."""
