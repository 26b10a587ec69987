"""Settings: the generated reference stays complete and current; bad values fail clearly."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import pytest
from pydantic import AliasChoices

from satchel.cli.main import main
from satchel.config import Settings, load_settings, settings_reference
from satchel.errors import ConfigError

DOC = Path(__file__).parent.parent / "docs" / "settings.md"
REGENERATE = ".venv/bin/satchel admin settings-reference > docs/settings.md"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only what a test sets: the developer's own SATCHEL_* variables must not leak in."""
    import os

    for name in list(os.environ):
        if name.startswith(("SATCHEL_", "GORILLA_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))


def documented_variables(text: str) -> set[str]:
    return set(re.findall(r"`((?:SATCHEL|GORILLA)_[A-Z0-9_]+)`", text))


def test_every_setting_is_in_the_doc() -> None:
    doc = DOC.read_text(encoding="utf-8")
    expected = set()
    for name, f in Settings.model_fields.items():
        # A field read under other names (an alias) is documented under those names.
        alias = f.validation_alias
        expected |= set(map(str, alias.choices)) if isinstance(alias, AliasChoices) else {
            f"SATCHEL_{name.upper()}"}
    assert "GORILLA_SUPPORTED_FILE_STORES" in expected
    missing = expected - documented_variables(doc)
    assert not missing, f"settings missing from docs/settings.md; run: {REGENERATE}: {missing}"
    unknown = documented_variables(doc) - expected
    assert not unknown, f"docs/settings.md documents settings that do not exist: {unknown}"


def test_settings_doc_is_current() -> None:
    current = settings_reference()
    if DOC.read_text(encoding="utf-8") != current:
        diff = "".join(difflib.unified_diff(
            DOC.read_text(encoding="utf-8").splitlines(keepends=True),
            current.splitlines(keepends=True), "docs/settings.md", "generated",
        ))
        pytest.fail(f"docs/settings.md is stale; regenerate it with\n    {REGENERATE}\n\n{diff}",
                    pytrace=False)


def test_every_setting_has_a_description() -> None:
    # The reference is only as good as the descriptions it is generated from.
    undocumented = [n for n, f in Settings.model_fields.items() if not (f.description or "")]
    assert not undocumented


def test_reference_lists_each_setting_with_its_default() -> None:
    rows = {line.split("|")[1].strip(): line for line in settings_reference().splitlines()
            if line.startswith("| `")}
    assert "`8080`" in rows["`SATCHEL_PORT`"] and "0-65535" in rows["`SATCHEL_PORT`"]
    assert "`self-managed`" in rows["`SATCHEL_DEPLOYMENT`"]
    assert "secret" in rows["`SATCHEL_ADMIN_API_KEY`"]
    # The home default is written portably, not as this machine's home directory.
    assert "`~/.satchel`" in rows["`SATCHEL_HOME`"]


def test_cli_prints_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["admin", "settings-reference"]) == 0
    assert capsys.readouterr().out == settings_reference()


def test_config_error_has_one_line_per_problem_without_values() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(port="abc", log_level="LOUD")
    problems = info.value.problems
    assert len(problems) == 2, problems
    assert sorted(p.split(":")[0] for p in problems) == ["SATCHEL_LOG_LEVEL", "SATCHEL_PORT"]
    for problem in problems:
        assert "\n" not in problem
        assert "abc" not in problem and "LOUD" not in problem
    level = next(p for p in problems if p.startswith("SATCHEL_LOG_LEVEL"))
    assert "DEBUG, INFO, WARNING, ERROR, CRITICAL" in level  # says what is expected
    assert "abc" not in str(info.value) and "LOUD" not in str(info.value)


def test_config_error_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SATCHEL_PORT", "70000")
    monkeypatch.setenv("SATCHEL_BASE_URL", "satchel.example.com")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert sorted(p.split(":")[0] for p in info.value.problems) == [
        "SATCHEL_BASE_URL", "SATCHEL_PORT"
    ]


@pytest.mark.parametrize("bad", [
    "not-a-key",
    "sk_short_" + "a" * 40,          # prefix must be 8 characters
    "sk_abcdefgh_" + "a" * 31,       # secret too short
    "sk_abcdefgh_" + "a" * 40 + "!",  # characters outside [A-Za-z0-9]
    "SK_abcdefgh_" + "a" * 40,
])
def test_admin_api_key_with_a_bad_shape_is_rejected(
    monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(admin_api_key=bad)
    assert [p.split(":")[0] for p in info.value.problems] == ["SATCHEL_ADMIN_API_KEY"]
    assert bad not in str(info.value)
    assert "sk_<8 letters/digits>_<32+ letters/digits>" in str(info.value)

    monkeypatch.setenv("SATCHEL_ADMIN_API_KEY", bad)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert [p.split(":")[0] for p in info.value.problems] == ["SATCHEL_ADMIN_API_KEY"]
    assert bad not in str(info.value)


def test_admin_api_key_with_the_right_shape_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk_abcdefgh_" + "Z9" * 20
    monkeypatch.setenv("SATCHEL_ADMIN_API_KEY", key)
    settings = load_settings()
    assert settings.admin_api_key is not None
    assert settings.admin_api_key.get_secret_value() == key
    assert key not in repr(settings)
