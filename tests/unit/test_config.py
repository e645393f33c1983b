"""app/config.py is the one source of the settings: docker-compose.yml and the README's table
must name the same settings with the same defaults."""

from __future__ import annotations

import re
from pathlib import Path

from app.config import COMPUTED_SETTINGS as COMPUTED
from app.config import INTERNAL_SETTINGS as INTERNAL
from app.config import Settings

ROOT = Path(__file__).parents[2]


def _default_text(name: str) -> str:
    value = Settings.model_fields[name].default
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _same(shown: str, want: str) -> bool:
    try:
        return float(shown) == float(want)
    except ValueError:
        return shown == want


def test_compose_defaults_are_the_settings_defaults() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    found = dict(re.findall(r"JACOBIAN_(\w+): \$\{JACOBIAN_\1:-([^}]*)\}", compose))
    assert found, "docker-compose.yml passes no JACOBIAN_ settings"
    for env, default in found.items():
        name = env.lower()
        assert name in Settings.model_fields, f"compose sets JACOBIAN_{env}, which is no setting"
        if name in COMPUTED:
            # not empty: podman-compose 1.0.3 passes `${X:-}` through literally
            assert default == "auto", f"JACOBIAN_{env}: say auto so the service computes it"
        else:
            want = _default_text(name)
            assert _same(default, want), f"JACOBIAN_{env}: {default!r} != {want!r}"


def test_the_readme_table_names_every_setting_with_its_default() -> None:
    readme = (ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| `JACOBIAN_(\w+)` \| ([^|]*) \|", readme, flags=re.M))
    public = {n for n in Settings.model_fields if n not in INTERNAL}
    assert {r.lower() for r in rows} == public, "README table and Settings differ"
    for env, cell in rows.items():
        name = env.lower()
        if name in COMPUTED or Settings.model_fields[name].default is None:
            continue
        shown = re.match(r"\s*`([^`]*)`", cell)
        assert shown, f"README: JACOBIAN_{env} shows no default"
        assert _same(shown.group(1), _default_text(name)), f"README: JACOBIAN_{env} {shown.group(1)}"


def test_auto_and_empty_mean_the_computed_default() -> None:
    computed = Settings()
    for value in ("auto", ""):
        s = Settings(workers=value, devices=value, memory_budget_bytes=value)
        assert (s.workers, s.devices, s.memory_budget_bytes) == (computed.workers, None, computed.memory_budget_bytes)
