"""The platform: registry, module store users, pools of sandboxes, invocations, metrics.

Sandboxes come from a backend (`backend.py`): KVM (HyperFork clones) or
processes forked from a zygote. The pool (`pool.py`) keeps templates and
ready instances per function version; the registry (`registry.py`) is the
durable state in SQLite.
"""
