"""Checks that keep the project's promises in step with its code."""

from __future__ import annotations

import json
import re
from pathlib import Path

from siyu.core.i18n import catalogue, catalogue_files
from siyu.core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "siyu"
# A literal followed by ``~`` is a prefix (``_("stage." ~ s)``); test_enum_labels checks those keys.
MSGID = re.compile(r"""(?<![\w.])N?_\(\s*(["'])((?:(?!\1).)+)\1(?!\s*~)""")
# Any exception raised with a literal message: domain errors carry English message ids.
ERROR_MSGID = re.compile(
    r"""\braise\s+(?!(?:Value|Type|Key|Runtime|Assertion)Error\b)[A-Z]\w*\(\s*(["'])((?:(?!\1).)+)\1""")


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in Settings.model_fields:
        assert f"`SIYU_{name.upper()}`" in readme, f"SIYU_{name.upper()} missing from README settings table"


def _message_ids() -> set[str]:
    found: set[str] = set()
    for path in SRC.rglob("*"):
        if path.suffix not in (".py", ".html") or "vendor" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        found.update(m.group(2) for m in MSGID.finditer(text))
        if path.suffix == ".py":
            found.update(m.group(2) for m in ERROR_MSGID.finditer(text))
    return found


def test_every_message_has_a_chinese_translation() -> None:
    known = catalogue("zh-CN")
    missing = sorted(m for m in _message_ids() if m not in known)
    assert not missing, f"add these to src/siyu/<domain>/locales/zh-CN.json: {missing}"


def test_catalogues_never_define_a_message_twice() -> None:
    seen: dict[str, Path] = {}
    for path in catalogue_files("zh-CN"):
        for key in json.loads(path.read_text(encoding="utf-8")):
            assert key not in seen, f"{key!r} is in both {seen[key]} and {path}"
            seen[key] = path


def test_no_third_party_bundles_are_committed() -> None:
    vendor = SRC / "web" / "static" / "vendor"
    gitignore = (ROOT / ".gitignore").read_text()
    assert "src/siyu/web/static/vendor/" in gitignore
    assert vendor.name == "vendor"


def test_enum_labels_have_chinese_translations() -> None:
    from siyu.customers.models import Stage, TouchKind
    from siyu.segments.models import RfmSegment
    from siyu.team.models import Role

    known = catalogue("zh-CN")
    keys = [f"role.{r.value}" for r in Role] + [f"stage.{s.value}" for s in Stage]
    keys += [f"touch.{k.value}" for k in TouchKind] + [f"rfm.{s.value}" for s in RfmSegment]
    assert not [k for k in keys if k not in known]


def test_migrations_match_the_models(database_template: str) -> None:
    from alembic import command

    from siyu.core.migrate import alembic_config

    url = database_template if "://" in database_template else f"sqlite:///{database_template}"
    command.check(alembic_config(url))  # raises when a model change has no migration


def test_upgrading_a_database_with_data_keeps_every_row(tmp_path: Path) -> None:
    """SQLite migrations rebuild tables (batch mode); dropping the old table must not cascade."""
    import sqlite3

    from siyu.core.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0001")
    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.execute("INSERT INTO account (id, display_name, wechat_id, kind, store, brand, tier_served,"
                     " friend_capacity, status, positioning, avatar_url, signature, greeting, moments_cover_url,"
                     " created_at) VALUES (1, '西湖店', 'xh', 'wecom', '', '', '', 5000, 'active', '', '', '', '', '',"
                     " '2026-01-01')")
        conn.execute("INSERT INTO customer (id, name, wechat_id, avatar_url, source, gender, age_band, city, job,"
                     " income_band, family, objective_notes, emotional_notes, stage, level, contact_count,"
                     " purchase_count, purchase_total, completeness, created_at, updated_at) VALUES (1, '王芳', '',"
                     " '', '', '', '', '', '', '', '', '', '', 'traffic', '', 0, 0, 0, 0, '2026-01-01', '2026-01-01')")
        conn.execute("INSERT INTO friendship (id, customer_id, account_id, remark_name, description, status,"
                     " channel_state, added_at) VALUES (1, 1, 1, '王芳-宝妈', '', 'active', '', '2026-01-01')")
    upgrade(url)
    with sqlite3.connect(tmp_path / "old.db") as conn:
        assert conn.execute("SELECT count(*) FROM friendship").fetchone() == (1,)
        assert conn.execute("SELECT name FROM customer").fetchall() == [("王芳",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


# Import circles between siyu modules that remain, each with why. Everything else must stay acyclic: jobs
# call services; services enqueue through core.jobs by name, never import their own domain's jobs; a domain
# imports another domain's service (or a lower module of it), never its routes; hooks are registered at import.
ALLOWED_IMPORT_CIRCLES: list[set[str]] = []


def _module_graph() -> dict[str, set[str]]:
    """siyu module → the siyu modules it imports, at module or function level (type-checking-only imports,
    which never run, left out); migrations are not modules the app imports."""
    import ast

    modules: dict[str, Path] = {}
    for path in SRC.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    def type_checking_only(tree: ast.AST) -> set[int]:
        skipped: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skipped.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
        return skipped

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = type_checking_only(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pieces = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join([*pieces, base] if base else pieces)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                found = resolve(target) if target.startswith("siyu.") else None
                if found and found not in (name, "siyu"):
                    graph[name].add(found)
    return graph


def _circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_no_new_import_circle_between_siyu_modules() -> None:
    new = [sorted(c) for c in _circles(_module_graph())
           if not any(c <= allowed for allowed in ALLOWED_IMPORT_CIRCLES)]
    assert not new, (f"new import circles: {new} — jobs call services, services enqueue by name through "
                     "core.jobs, a domain imports another's service (never its routes or jobs); move the shared "
                     "function to the lower module or register a hook at import")


def test_the_import_circle_check_finds_a_circle() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
