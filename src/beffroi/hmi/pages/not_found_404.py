"""The page shown at an address the HMI has no page for (Dash finds it by its module name)."""

from __future__ import annotations

import dash
from dash import dcc, html

from beffroi.i18n import _

dash.register_page(__name__, path="/404", title=lambda: "Beffroi — " + _("Page not found"))


def layout(**_query: str) -> html.Div:
    """Say that there is no such page, and lead back to the map."""
    return html.Div(
        id="not-found",
        children=[
            html.H2(_("Page not found")),
            html.P(_("There is no page at this address.")),
            dcc.Link(_("Back to the command post"), href="/"),
        ],
    )
