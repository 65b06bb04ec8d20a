"""[kpi] validation: each case under tests/cases/kpi/config is a snippet and the error it gives."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from beffroi.app.config import load_config
from beffroi.cli import app
from tests.conftest import ROOT

CASES = Path(__file__).parent / "cases" / "kpi"
BAD = sorted(p.name for p in (CASES / "config").iterdir() if (p / "error.txt").exists())


@pytest.mark.parametrize("case", BAD)
def test_bad_kpi_config_names_the_toml_path(case: str, tmp_path: Path) -> None:
    """check-config exits 2 with exactly `FILE: kpi.path: message`."""
    folder = CASES / "config" / case
    path = tmp_path / "config.toml"
    path.write_text((CASES / "base.toml").read_text() + "\n" + (folder / "config.toml").read_text())
    result = CliRunner().invoke(app, ["check-config", "-c", str(path)])
    assert result.exit_code == 2, result.output
    expected = (folder / "error.txt").read_text().replace("config.toml:", f"{path}:", 1)
    assert result.stderr.strip() == expected.strip()


def test_demo_config_defines_every_kpi_family() -> None:
    """The shipped config computes energy, lighting, availability, mobility, water and waste."""
    from beffroi.kpi.engine import active_kpis

    cfg = load_config(ROOT / "config.toml")
    assert cfg.kpi.active
    families = {k.family for k in active_kpis(cfg)}
    assert families == {"energy", "lighting", "availability", "mobility", "water", "waste"}
    assert "bus_priority_granted_pct" in {k.name for k in active_kpis(cfg)}  # the simulator counts
    assert cfg.kpi.lighting is not None and cfg.kpi.lighting.target_pct == 65


def test_no_kpi_section_means_no_engine() -> None:
    """A config without [kpi] tables leaves the KPI engine out of the gateway."""
    text = (CASES / "base.toml").read_text()
    from beffroi.app.config import parse_config

    assert not parse_config(text).kpi.active
