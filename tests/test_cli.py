from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from siyu.cli import app
from siyu.core import db as core_db
from siyu.core.settings import get_settings

runner = CliRunner()


@pytest.fixture
def fresh_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "cli.db"
    monkeypatch.setenv("SIYU_DATABASE_URL", f"sqlite:///{path}")
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    core_db.reset_engine()
    yield path
    core_db.reset_engine()
    get_settings.cache_clear()


def test_every_command_has_help() -> None:
    for args in ([], ["init"], ["serve"], ["demo"], ["user"], ["user", "create"]):
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0, (args, result.output)
        assert "Usage" in result.output


def test_init_creates_the_schema_and_user_create_adds_a_user(fresh_sqlite: Path) -> None:
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    assert fresh_sqlite.exists()
    again = runner.invoke(app, ["init"])  # idempotent: migrating an up-to-date database is a no-op
    assert again.exit_code == 0
    created = runner.invoke(app, ["user", "create", "xiaoli", "--role", "service", "--password", "a-long-password"])
    assert created.exit_code == 0, created.output
    assert "xiaoli" in created.output
    duplicate = runner.invoke(app, ["user", "create", "xiaoli", "--role", "service", "--password", "a-long-password"])
    assert duplicate.exit_code == 2
    bad_role = runner.invoke(app, ["user", "create", "laowang", "--role", "boss", "--password", "a-long-password"])
    assert bad_role.exit_code == 2
    assert "role" in bad_role.output
