"""The documents hold together: every setting the code reads is in docs/configuration.md
with its real default (the table is generated from SETTINGS_DOC), the README's short table
agrees with it, every relative link and #anchor of the README and docs/ exists, and every
section that a --help text, an error message or a docstring names exists where it says."""

from __future__ import annotations

import re
from pathlib import Path

import click

from retention_tracker.cli.main import cli
from retention_tracker.config.settings import (
    DEFAULT_TEXT,
    SETTINGS_DOC,
    Settings,
    settings_table,
)

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()
DOCUMENTS = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
README_LINES_AT_MOST = 300  # a front door; the rest lives in docs/
# `docs/operations.md "Replaying a history"`, `README 'X'`, `docs/x.md, "X"`, `docs/x.md ("X")`
SECTION_REF = re.compile(
    r"(README(?:\.md)?|BENCHMARKS\.md|docs/[\w-]+\.md)(?:'s)?,? \(?[\"']([^\"'\n]+)[\"']")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def headings(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # no '#' of code blocks
    return [m[1].strip() for m in re.finditer(r"^#+ (.+)$", text, re.M)]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def test_every_setting_is_in_the_reference_with_its_default() -> None:
    for doc in SETTINGS_DOC:
        default = f"`{doc.default}`" if doc.default else ""
        assert f"| `{doc.env}` | {default} |" in CONFIGURATION, doc.env


def test_the_reference_table_is_the_generated_one() -> None:
    begin = "<!-- settings table: generated, do not edit by hand -->\n"
    end = "\n<!-- end of settings table -->"
    shown = CONFIGURATION.split(begin, 1)[1].split(end, 1)[0]
    assert shown == settings_table(), "regenerate docs/configuration.md's table"


def test_the_readme_short_table_gives_the_real_defaults() -> None:
    section = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert len(rows) >= 8
    for row in rows:
        names_cell, defaults_cell = row.strip("|").split("|")[:2]
        names = re.findall(r"`([A-Z_]+)`", names_cell)
        assert names and all(name in DEFAULT_TEXT for name in names), row
        shown = re.findall(r"`([^`]+)`", defaults_cell)
        assert shown == [DEFAULT_TEXT[n] for n in names if DEFAULT_TEXT[n]], row


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


def test_the_readme_is_a_front_door() -> None:
    assert len(README.splitlines()) <= README_LINES_AT_MOST
    assert "](docs/page.png)" in README and (ROOT / "docs" / "page.png").exists()


def test_every_relative_link_and_anchor_exists() -> None:
    broken = []
    for document in DOCUMENTS:
        for target in LINK.findall(document.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            linked = (document.parent / path).resolve() if path else document
            if not linked.exists():
                broken.append(f"{document.name}: {target} (no such file)")
            elif anchor and anchor not in {slug(h) for h in headings(linked)}:
                broken.append(f"{document.name}: {target} (no such section)")
    assert broken == []


def help_texts() -> dict[str, str]:
    """`retention <command> --help` of every command, as click renders it."""
    root = click.Context(cli, info_name="retention")
    found = {"retention": cli.get_help(root)}
    for name, command in cli.commands.items():
        found[name] = command.get_help(click.Context(command, info_name=name, parent=root))
    return found


def named_sections(text: str) -> list[tuple[str, str]]:
    return SECTION_REF.findall(" ".join(text.split()))  # help texts wrap lines


def missing_sections(references: list[tuple[str, str]]) -> list[str]:
    missing = []
    for document, section in references:
        path = ROOT / ("README.md" if document.startswith("README") else document)
        if not path.exists() or not any(h.startswith(section) for h in headings(path)):
            missing.append(f"{document} {section!r}")
    return missing


def test_every_section_a_help_text_names_exists() -> None:
    texts = help_texts()
    references = [ref for text in texts.values() for ref in named_sections(text)]
    assert ("docs/operations.md", "Replaying a history") in references  # replay --help
    assert missing_sections(references) == []


def test_every_section_the_code_and_docs_name_exists() -> None:
    sources = [p for folder in ("agents", "bench", "cli", "config", "state", "streams",
                                "tests", "dashboards", "scripts")
               for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".yml", "")
               and p.is_file() and "compose-spec" not in p.parts
               and p != Path(__file__)]  # this file names wrong sections on purpose
    references = [ref for path in [*sources, *DOCUMENTS, ROOT / "pyproject.toml"]
                  for ref in named_sections(path.read_text(errors="replace"))]
    assert len(references) >= 10
    assert missing_sections(references) == [], references


def test_the_checks_catch_a_wrong_name() -> None:
    assert missing_sections([("README", "Replaying")]) == ["README 'Replaying'"]
    assert named_sections("see docs/operations.md\n  'Replaying a history')") == [
        ("docs/operations.md", "Replaying a history")]
