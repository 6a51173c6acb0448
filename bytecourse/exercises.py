"""Shared plumbing of the chapters' exercise self-checks (``bytecourse/<chapter>/solutions.py``)."""

from __future__ import annotations

from collections.abc import Callable


def report(name: str, err: float, tol: float) -> tuple[bool, float]:
    """Print and return ``(passed, error)`` for one self-check."""
    ok = err <= tol
    print(f"{name}: error = {err:.2e} (tolerance {tol:.0e}) → {'PASSED' if ok else 'FAILED'}")
    return ok, err


def attempt(name: str, fn: Callable, *args):
    """Call the learner's function; a stub that raises ``NotImplementedError`` is reported as not attempted (None)."""
    try:
        return fn(*args)
    except NotImplementedError:
        print(f"{name}: not attempted yet — fill in the function above (the solution is in the next cell).")
        return None
