"""Names shown for domains and asset classes, translated where they are drawn."""

from __future__ import annotations

from beffroi.core.site import Site
from beffroi.i18n import N_, _

DOMAIN_LABELS = {
    "lighting": N_("Lighting"),
    "traffic": N_("Traffic"),
    "mobility": N_("Mobility"),
    "security": N_("Security"),
    "water": N_("Water"),
    "waste": N_("Waste"),
    "buildings": N_("Buildings"),
    "parking": N_("Parking"),
    "other": N_("Other"),
}


def domain_label(domain: str) -> str:
    """Return a domain's name in the current locale (its id when it has none)."""
    return _(DOMAIN_LABELS[domain]) if domain in DOMAIN_LABELS else domain


def class_label(site: Site, asset_class: str) -> str:
    """Return an asset class's label from the config, in the current locale when known."""
    cls = site.asset_classes.get(asset_class)
    return _(cls.label) if cls is not None else asset_class
