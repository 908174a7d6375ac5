"""Settings as the environment of a `reconcile` the watch agent runs (its image pulls)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from reconcile.engine.settings import Settings
from state.subnets import SubnetPool

CHOSEN = [
    Settings(Path("/var/lib/reconcile"), "reconcile"),
    Settings(Path("/srv/rc state"), "rc-x/y", frozenset({"reg.example:5000", "10.0.0.1"}), 12.5,
             SubnetPool.parse("base=10.200.0.0/16,size=26"), "iptables", 0.0),
    Settings(Path("/tmp/s"), "p", depends_timeout=0.1, pull_stall_timeout=2.5),
]


def test_every_setting_is_chosen_away_from_its_default_in_some_case() -> None:
    """So that a setting added without its variable in `environment()` fails the round trip."""
    defaults = Settings(Path("/var/lib/reconcile"), "reconcile")
    assert all(any(getattr(chosen, f.name) != getattr(defaults, f.name) for chosen in CHOSEN)
               for f in dataclasses.fields(Settings) if f.name not in ("state_dir", "cgroup_parent"))


@pytest.mark.parametrize("chosen", CHOSEN)
def test_settings_come_back_the_same_from_the_environment_they_give(chosen: Settings,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in [name for name in os.environ if name.startswith("RECONCILE_")]:
        monkeypatch.delenv(variable)
    for variable, value in chosen.environment().items():
        monkeypatch.setenv(variable, value)
    assert Settings.resolve(None, None) == chosen
