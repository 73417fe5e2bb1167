"""Code that runs inside a USF: the agent, and later the guest library usetl.etl.

These modules are baked into the image under /usetl/lib/usetl/ and run by
the guest's CPython; the host never imports them.
"""
