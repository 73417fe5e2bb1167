"""usetl.runtime: hooks around a template's freeze, for the function's own code.

A function template is frozen once (after its module ran, or after its
warm-up run) and every clone starts from that instant, as Lambda's
SnapStart restores a snapshot. What must not be shared between clones, or
cannot survive a freeze, is the function's to handle:

    from usetl import runtime

    @runtime.before_freeze
    def close_pool():          # runs once, just before the template is frozen
        pool.close()

    @runtime.after_clone
    def reconnect():           # runs in every new clone (a process instance, too)
        global pool, rng
        pool, rng = connect(), random.Random()   # own connections, own seeds

Hooks run in registration order. One that raises fails what it runs in:
the deploy (before_freeze) or the new clone (after_clone).
"""

__all__ = ["after_clone", "before_freeze"]

_before_freeze = []
_after_clone = []


def before_freeze(fn):
    """Register fn() to run once, just before the template is frozen; returns fn."""
    _before_freeze.append(fn)
    return fn


def after_clone(fn):
    """Register fn() to run in each new clone before its first invocation; returns fn."""
    _after_clone.append(fn)
    return fn


def run_before_freeze():
    for fn in _before_freeze:
        fn()


def run_after_clone():
    for fn in _after_clone:
        fn()
