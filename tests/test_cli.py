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


def test_demo_builds_the_company_and_prints_the_login(fresh_sqlite: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    served: list[str] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.append(app))
    monkeypatch.setenv("SIYU_ADMIN_PASSWORD", "tea-garden-2026")
    get_settings.cache_clear()
    demo_db = fresh_sqlite.parent / "demo.db"
    result = runner.invoke(app, ["demo", "--no-browser", "--customers", "60", "--port", "8123",
                                 "--database", f"sqlite:///{demo_db}"])
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:8123/" in result.output
    assert "admin / tea-garden-2026" in result.output
    assert served == ["siyu.app:create_app"]
    again = runner.invoke(app, ["demo", "--no-browser", "--customers", "60", "--database", f"sqlite:///{demo_db}"])
    assert again.exit_code == 2  # a database with data is never wiped without --force
    assert "--force" in again.output


def test_demo_refuses_a_short_admin_password(fresh_sqlite: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIYU_ADMIN_PASSWORD", "short")
    get_settings.cache_clear()
    result = runner.invoke(app, ["demo", "--no-browser"])
    assert result.exit_code == 2
    assert "SIYU_ADMIN_PASSWORD" in result.output
