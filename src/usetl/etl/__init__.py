"""Host side of the ETL API: URL policy, HTTP client into guest memory, I/O accounting,
and the egress (egress.py) and egress broker (broker.py) that carry requests out."""

from .accounting import IoAccount
from .errors import EtlError
from .http import HttpClient, Transfer
from .policy import Target, UrlPolicy

__all__ = ["EtlError", "HttpClient", "IoAccount", "Target", "Transfer", "UrlPolicy"]
