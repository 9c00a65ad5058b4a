"""One place that turns exceptions into messages for the user, so a bad request never takes the server down.

``user_errors`` wraps an event handler: ``ValueError`` (``MidiError`` included) and ``FloatingPointError``
become a ``gr.Error`` carrying their message; a ``gr.Error`` passes through; anything else is logged with its
traceback and shown as ``internal error: …``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import gradio as gr

log = logging.getLogger("app")

P = ParamSpec("P")
R = TypeVar("R")

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FloatingPointError)


def to_gr_error(err: BaseException) -> gr.Error:
    """The ``gr.Error`` shown for ``err`` (logs unexpected errors with their traceback)."""
    if isinstance(err, gr.Error):
        return err
    if isinstance(err, USER_ERRORS):
        return gr.Error(str(err) or type(err).__name__, print_exception=False)
    log.error("internal error in a request", exc_info=err)
    return gr.Error(f"internal error: {type(err).__name__}: {err}", print_exception=False)


def user_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate an event handler so that every exception reaches the browser as a readable ``gr.Error``.

    ``functools.wraps`` keeps the signature visible to Gradio (it looks for ``gr.Progress`` defaults there).
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            raise to_gr_error(err) from err

    return wrapper
