"""usetl: Python serverless functions in KVM unikernels (USFs)."""

__version__ = "0.1.0"
