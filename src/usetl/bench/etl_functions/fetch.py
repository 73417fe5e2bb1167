"""How the benchmark's functions read a URL: etl.get in usetl, urllib in a plain host process.

In a USF (and the process backend) `usetl.etl` is the ETL API; the host baseline runs the
same function in a Python process that has no usetl on its path.
"""

try:
    from usetl import etl
except ImportError:
    etl = None
    import urllib.request


def fetch(url):
    """The body at url, as bytes or a read-only memoryview of them."""
    if etl is not None:
        return etl.get(url).view()
    with urllib.request.urlopen(url) as response:
        return response.read()
