"""Change scene settings for one job and put them back, whatever happens (no half-changed scene)."""

import contextlib


@contextlib.contextmanager
def temporarily(changes: list[tuple]):
    """Set each (owner, attribute, value) in order; restore them in reverse order afterwards."""
    with contextlib.ExitStack() as restore:
        for owner, name, value in changes:
            old = getattr(owner, name)
            setattr(owner, name, value)
            restore.callback(setattr, owner, name, old)
        yield
