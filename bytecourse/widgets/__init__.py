"""Widgets are thin views over pure functions.

A :class:`FunctionView` owns a few ipywidgets controls, a pure ``compute(**values)`` and a ``render(result)``
that draws into an ``Output``. Changing a control calls :meth:`FunctionView.refresh`; the last result is kept
in ``view.result`` so tests can drive the widget from Python (set a slider's ``.value``) and check what the
learner would see, without a browser.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import ipywidgets as W
from IPython.display import display


class FunctionView:
    def __init__(
        self,
        controls: dict[str, W.ValueWidget],
        compute: Callable[..., Any],
        render: Callable[[Any], None],
        button: str | None = None,
        title: str | None = None,
    ):
        self.controls = controls
        self.compute = compute
        self.render = render
        self.output = W.Output()
        self.status = W.HTML()
        self.result: Any = None
        self.calls = 0
        self._paused = False
        children: list[W.Widget] = []
        if title:
            children.append(W.HTML(f"<b>{title}</b>"))
        children += list(controls.values())
        if button:
            self.button = W.Button(description=button, button_style="primary")
            self.button.on_click(lambda _: self.refresh())
            children.append(self.button)
        else:
            self.button = None
            for c in controls.values():
                c.observe(self._on_change, names="value")
        self.widget = W.VBox([W.VBox(children), self.status, self.output])

    def values(self) -> dict[str, Any]:
        return {k: c.value for k, c in self.controls.items()}

    def _on_change(self, _change) -> None:
        if not self._paused:
            self.refresh()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Set several controls at once (e.g. from a drawing) and recompute once, at the end."""
        self._paused = True
        try:
            yield
        finally:
            self._paused = False
        if self.button is None:
            self.refresh()

    def refresh(self) -> Any:
        """Recompute from the controls' current values and redraw.

        A ``ValueError`` (bad input from a control) is shown in the status line and clears ``result``, so a
        test never reads a stale result as the answer to the new values; any other error is shown too (the
        status never stays at "computing…") and then raised, so it is not hidden."""
        self.status.value = "<i>computing…</i>"
        try:
            result = self.compute(**self.values())
            self.calls += 1
            self.output.clear_output(wait=True)
            with self.output:
                self.render(result)
            self.result = result
            self.status.value = ""
        except ValueError as e:  # bad input from a control: say so in the widget instead of a traceback
            self.result = None
            self.status.value = f"<span style='color:#b00'>{html.escape(str(e))}</span>"
        except Exception as e:
            self.result = None
            self.status.value = (
                f"<span style='color:#b00'>error: {html.escape(type(e).__name__ + ': ' + str(e))}</span>"
            )
            raise
        return self.result

    def show(self) -> FunctionView:
        self.refresh()
        display(self.widget)
        return self
