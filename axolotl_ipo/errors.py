"""A user's mistake (config, data, paths, disk) reaches them as one line: what is wrong, where
(file, row or key) and what to do; never a traceback. The same line from `axolotl-ipo` and from
training through Axolotl's CLI."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

PREFIX = "axolotl-ipo: error: "

F = TypeVar("F", bound=Callable[..., Any])


class UserError(ValueError):
    """A mistake the user fixes; the message names the file, row or key and the fix."""


def one_line(err: BaseException) -> str:
    """The message on one line (pydantic and YAML errors span several)."""
    return " ".join(part.strip() for part in str(err).splitlines() if part.strip())


def exit_on_user_error(hook: F) -> F:
    """For plugin hooks: Axolotl's CLI prints a traceback for any exception a hook raises, but
    lets SystemExit through, which Python prints as its message alone (exit code 1)."""

    @functools.wraps(hook)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return hook(*args, **kwargs)
        except UserError as err:
            raise SystemExit(PREFIX + one_line(err)) from None

    return wrapper  # type: ignore[return-value]
