"""User-facing errors: bad input is reported as one line naming the problem and the fix, exit code 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

EXIT_USER_ERROR = 2

F = TypeVar("F", bound=Callable)


class UserError(Exception):
    """Bad input (data, config, weights, paths): the message says what is wrong and how to fix it."""


def exit_on_user_error(fn: F) -> F:
    """Wrap an entry point: a UserError becomes one line on stderr and exit code 2, no traceback.

    Hydra's ``instantiate`` wraps what a constructor raises in an InstantiationException, so the
    UserError is looked for along the chain of causes too.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            cause = err
            while cause is not None and not isinstance(cause, UserError):
                cause = cause.__cause__
            if cause is None:
                raise
            print(f"error: {cause}", file=sys.stderr, flush=True)
            sys.exit(EXIT_USER_ERROR)

    return wrapper  # type: ignore[return-value]
