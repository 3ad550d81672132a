"""The README documents every setting the code reads, with its real default."""

from __future__ import annotations

from pathlib import Path

from retention_tracker.config.settings import SETTINGS_DOC, Settings

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_readme_table_with_its_default() -> None:
    for doc in SETTINGS_DOC:
        default = f"`{doc.default}`" if doc.default else ""
        assert f"| `{doc.env}` | {default} |" in README, doc.env


def test_documented_defaults_are_the_defaults() -> None:
    """The documented text of each default is what ``from_env`` parses when the variable
    is unset, and it gives the dataclass default back."""
    built = Settings.from_env({})
    documented = {d.env: d.default for d in SETTINGS_DOC}
    assert documented["WEB_PORT"] == str(built.web_port)
    assert documented["HORIZON_DAYS"] == str(built.horizon_days)
    assert documented["INACTIVITY_THRESHOLDS"] == ",".join(map(str, built.inactivity_thresholds))
    assert documented["METRICS_OFFSETS"] == ",".join(map(str, built.metrics_offsets))
    assert Settings.from_env({}) == Settings()
    assert documented["WINBACK_MAX_DELAY"] == "24h"
    assert documented["REKEY_TOPIC"] == "GROUP_ID.rekey"
    assert Settings.from_env(
        {d.env: d.default for d in SETTINGS_DOC if d.env != "REKEY_TOPIC"}) == Settings()
