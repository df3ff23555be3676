"""Finding the error worth telling the user about inside an exception group.

apviz runs its sources and its state owner in ``asyncio.TaskGroup``s (a pipeline inside the
service), so a source's ``PermissionError`` (no CAP_NET_ADMIN) reaches the command line wrapped in
one ``ExceptionGroup`` per level. The message that says how to fix it is in the innermost leaf;
printing the group would bury it under a traceback.
"""

from __future__ import annotations

from apviz.config import ConfigError

#: Errors whose message is the whole story: printed as one line, exit status 2, no traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (PermissionError, FileNotFoundError, ConfigError)


def leaves(exc: BaseException) -> list[BaseException]:
    """Every non-group exception inside ``exc`` (itself when it is not a group), in order."""
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for inner in exc.exceptions:
            out.extend(leaves(inner))
        return out
    return [exc]


def user_error(exc: BaseException) -> BaseException | None:
    """The first leaf the user can fix from its message alone (see USER_ERRORS), or None."""
    for leaf in leaves(exc):
        if isinstance(leaf, USER_ERRORS):
            return leaf
    return None


def message(exc: BaseException) -> str:
    """One line for the terminal: an OSError's text without the ``[Errno 1]`` prefix."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
        if exc.filename is not None and str(exc.filename) not in text:
            text = f"{text}: {exc.filename}"
        return text
    return str(exc)
