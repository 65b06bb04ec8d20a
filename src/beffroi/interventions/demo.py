"""A few residents' reports for the demo, so that the triage queue shows what it is for."""

from __future__ import annotations

import logging
import random

from beffroi.interventions.service import InterventionService

log = logging.getLogger(__name__)

# (category, the asset class near which it is placed, what the resident wrote)
DEMO_REPORTS = (
    ("dark_street", "streetlight_cabinet", "Toute la rue est dans le noir depuis hier soir."),
    ("dark_street", "streetlight_cabinet", "Lampadaire éteint devant l'école, c'est dangereux."),
    ("container", "waste_container", "Le conteneur à verre déborde, bouteilles sur le trottoir."),
    ("bollard", "bollard", "La borne reste levée, les livreurs ne peuvent plus passer."),
    ("traffic_light", "traffic_controller", "Le feu reste au rouge dans les deux sens."),
)


def seed_reports(service: InterventionService, seed: int = 7) -> int:
    """Add the demo's reports once (none when the store already holds some); return how many."""
    if not service.store.reports(("new", "linked", "rejected", "closed")).empty:
        return 0
    rng = random.Random(seed)
    assets = list(service.register.assets.values())
    made = 0
    for category, cls, text in DEMO_REPORTS:
        near = sorted((a for a in assets if a.asset_class == cls), key=lambda a: a.id)
        if not near:
            continue
        a = rng.choice(near)
        # A resident stands near the equipment, not on it: ~30 m away.
        lat, lon = a.lat + rng.uniform(-3e-4, 3e-4), a.lon + rng.uniform(-3e-4, 3e-4)
        service.report(category, lat, lon, text, address=f"près de {a.id} ({a.commune})")
        made += 1
    log.info("demo: %d residents' reports waiting for triage", made)
    return made
