"""One place that turns exceptions into messages for the user, so a bad request never takes the server down.

``user_errors`` wraps an event handler: ``ValueError`` (``MidiError`` included) and ``FloatingPointError``
become a ``gr.Error`` carrying their message; a ``gr.Error`` passes through; anything else is logged with its
traceback and shown as ``internal error: …``. ``check_number`` is the check every numeric input goes through (sliders
only help the browser).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import gradio as gr
import numpy as np

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


def check_number(name: str, value: Any, lo: float, hi: float, *, integer: bool = False) -> int | float:
    """``value`` as a number in ``lo..hi`` (an int when ``integer``); ValueError with a clear message if not."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if integer and value != int(value):
        raise ValueError(f"{name} must be a whole number, got {value}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo:g} and {hi:g}, got {value:g}")
    return int(value) if integer else float(value)
