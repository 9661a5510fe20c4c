"""A form an agent asks the user to fill (ACP elicitation, form mode), as a small widget.

Owns: ``ElicitationForm``: one input per field of the agent's schema (a dropdown for a choice, a
checkbox for a yes/no, a text box otherwise), and Submit / Decline buttons that answer through
the host (``session answer`` does the same from code). Everything the agent wrote (its message,
field titles and descriptions, choices) is HTML-escaped or shown as plain text. Must not import
``agh_nb.server``.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

from agh_nb.core.host import HostProtocol
from agh_nb.errors import AghError
from agh_nb.events import JSON


def _field_widget(field: JSON) -> Any:
    label = str(field.get("title") or field["name"]) + (" *" if field.get("required") else "")
    values = field.get("values")
    default = field.get("default")
    if field.get("type") == "boolean":
        return widgets.Checkbox(value=bool(default), description=label, indent=False)
    if field.get("type") == "array" and values:
        return widgets.SelectMultiple(options=list(values), description=label)
    if values:
        options = ([] if field.get("required") else [""]) + list(values)
        return widgets.Dropdown(options=options, value=str(default) if default in values else options[0], description=label)
    return widgets.Text(value="" if default is None else str(default), description=label, placeholder=str(field.get("type") or ""))


class ElicitationForm(widgets.VBox):  # type: ignore[misc]
    """One pending elicitation as a form; answered forms disable themselves.

    Args:
        host: the process-wide host (embedded or remote).
        request: the pending elicitation (``host.pending_elicitations()``).
    """

    def __init__(self, host: HostProtocol, request: JSON) -> None:
        self._host = host
        self.request_id: str = request["request_id"]
        self.session_id: str = request["session_id"]
        self.fields = list(request.get("fields") or [])
        header = widgets.HTML(
            f"<b>{html.escape(str(request.get('message') or ''))}</b> "
            f"<span style='color:#999;font-size:85%'>{html.escape(self.request_id)} · {html.escape(self.session_id)}</span>"
        )
        self.inputs = {f["name"]: _field_widget(f) for f in self.fields}
        for f in self.fields:
            if f.get("description"):
                self.inputs[f["name"]].description_tooltip = str(f["description"])  # a tooltip is text, not HTML
        self.submit = widgets.Button(description="Submit", button_style="success")
        self.decline = widgets.Button(description="Decline", button_style="warning")
        self.submit.on_click(lambda _b: self.send("accept"))
        self.decline.on_click(lambda _b: self.send("decline"))
        self.status = widgets.Label(value="")
        super().__init__(
            [header, *self.inputs.values(), widgets.HBox([self.submit, self.decline]), self.status],
            layout=widgets.Layout(border="1px solid #ddd", padding="4px", margin="2px 0"),
        )

    def values(self) -> dict[str, str]:
        """The form's values as ``session answer`` takes them (empty ones left out)."""
        out: dict[str, str] = {}
        for name, widget in self.inputs.items():
            value = widget.value
            if isinstance(value, bool):
                out[name] = "true" if value else "false"
            elif isinstance(value, tuple):
                if value:
                    out[name] = ",".join(value)
            elif str(value).strip():
                out[name] = str(value).strip()
        return out

    def send(self, action: str) -> None:
        """Answer the form (what the buttons call); a mistake shows in the status line."""
        try:
            self._host.answer(self.session_id, self.request_id, self.values() if action == "accept" else {}, action=action)
        except AghError as exc:
            self.status.value = f"error: {exc}"
            return
        self.done(action)

    def done(self, action: str) -> None:
        """The form was answered (here or elsewhere): disable it and say how."""
        self.status.value = f"{self.request_id}: {action}"
        for widget in (*self.inputs.values(), self.submit, self.decline):
            widget.disabled = True
