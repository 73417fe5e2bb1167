"""The one guest runtime: the agent loop, Context, usetl.etl and the process sandbox's transport.

These modules are baked into the image under /usetl/lib/usetl/ (with
usetl.abi, the contract) and run by the guest's CPython; the process
backend's sandbox imports the same files (image.guest_lib). The host never
imports them: in the guest they are the `usetl` package (usetl.agent,
usetl.etl, usetl.sandbox), a layout the host's own package cannot have.
"""
