"""Config validation: every case under tests/cases/config is a file and the error it must give."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from beffroi.app.config import load_config
from beffroi.cli import app
from beffroi.core.errors import ConfigError
from beffroi.core.register import build_register

CASES = Path(__file__).parent / "cases" / "config"
BAD = sorted(p.name for p in CASES.iterdir() if (p / "error.txt").exists())


@pytest.mark.parametrize("case", BAD)
def test_bad_config_names_file_path_and_expectation(case: str) -> None:
    """check-config exits 2 and prints exactly the expected `FILE: toml.path: message` lines."""
    path = CASES / case / "config.toml"
    result = CliRunner().invoke(app, ["check-config", "-c", str(path)])
    assert result.exit_code == 2, result.output
    expected = "\n".join(
        f"{path}:{line.removeprefix('config.toml:')}"
        for line in (CASES / case / "error.txt").read_text().strip().splitlines()
    )
    assert result.stderr.strip() == expected.strip()
    assert "Traceback" not in result.output


def test_good_config_passes() -> None:
    """A valid file exits 0 and reports what it describes."""
    result = CliRunner().invoke(app, ["check-config", "-c", str(CASES / "good" / "config.toml")])
    assert result.exit_code == 0, result.output
    assert "2 communes" in result.stdout and "11 assets" in result.stdout


def test_console_script_prints_no_traceback() -> None:
    """The installed command gives the one-line error, not a Python traceback."""
    path = CASES / "malformed_toml" / "config.toml"
    proc = subprocess.run(
        [sys.executable, "-m", "beffroi", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"{path}: (syntax): malformed TOML")
    assert "Traceback" not in proc.stderr


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    """A config path that does not exist names the file."""
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "nope.toml")
    assert err.value.lines[0].startswith(f"{tmp_path / 'nope.toml'}: (file): cannot read")


def test_demo_config_describes_the_metropolis(demo_config) -> None:
    """The shipped config has the 24 communes and a register with every asset class."""
    assert len(demo_config.communes) == 24
    assert {c.name for c in demo_config.communes} >= {"Dijon", "Chenôve", "Talant", "Quetigny"}
    register = build_register(demo_config)
    assert 900 <= len(register.assets) <= 1100
    assert {a.asset_class for a in register.assets.values()} == set(demo_config.asset_classes)
    assert {a.commune for a in register.assets.values()} == set(demo_config.commune_ids())
    for asset in register.assets.values():
        for tag in asset.tags:
            assert tag.name == f"{asset.commune}/{asset.id}/{tag.signal}"


def test_register_is_deterministic_and_scales(demo_config) -> None:
    """Same seed and size give the same register; the size knob reaches 50,000 tags."""
    a = build_register(demo_config, assets=200)
    b = build_register(demo_config, assets=200)
    assert [(x.id, x.lat, x.lon) for x in a.assets.values()] == [
        (x.id, x.lat, x.lon) for x in b.assets.values()
    ]
    big = build_register(demo_config, assets=12_000)
    assert len(big.tags) >= 50_000
    assert len({x.id for x in big.assets.values()}) == len(big.assets)
