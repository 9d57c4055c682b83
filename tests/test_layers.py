"""The foundation holds: import-linter's layer contracts, and the docs' catalogue is the registry's."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    """setup.cfg's contracts: no upward import (also inside functions), no cycle, data and models apart."""
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    result = subprocess.run([exe, "--config", str(ROOT / "setup.cfg")], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_a_layer_violation_inside_a_function_is_caught(tmp_path: Path) -> None:
    """The contracts see imports in function bodies: plant one and lint-imports must fail."""
    tree = tmp_path / "repo"
    shutil.copytree(ROOT / "search", tree / "search", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "setup.cfg", tree / "setup.cfg")
    color = tree / "search" / "data" / "color.py"
    color.write_text(color.read_text() + "\n\ndef _sneaky():\n    from search.study import runner  # noqa\n")
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    result = subprocess.run([exe, "--config", "setup.cfg"], cwd=tree, capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(tree), "PATH": str(Path(sys.executable).parent)})
    assert result.returncode != 0
    assert "search.data.color -> search.study.runner" in result.stdout


def _docs_hook() -> Any:
    """docs/hooks/generated.py, the MkDocs hook that fills generated blocks when the site is built."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_hook_generated", ROOT / "docs" / "hooks" / "generated.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_catalogue_is_the_registry() -> None:
    """The strategy catalogue page holds the generated block, and the site's build fills it with the
    registry's table (so the page cannot go stale); an unknown block fails the build."""
    from types import SimpleNamespace

    from search.tools.catalogue import README_BEGIN, README_END, catalogue, format_catalogue

    page = (ROOT / "docs" / "reference" / "strategies.md").read_text()
    assert page.count("<!-- generated: strategies -->") == 1
    assert "| `lr` |" not in page, "the catalogue page must not hold a hand-pasted table"
    hook = _docs_hook()
    built = hook.on_page_markdown(page, SimpleNamespace(file=SimpleNamespace(src_path="reference/strategies.md")),
                                  None, None)
    table = format_catalogue(catalogue(), markdown=True)
    assert built.count(table) == 1 and README_BEGIN in built and README_END in built
    assert "<!-- generated:" not in built
    for name in ("lr", "augment", "ema_decay", "compile"):
        assert f"| `{name}` |" in built
    with pytest.raises(ValueError, match="unknown generated block 'nonesuch'"):
        hook.on_page_markdown("<!-- generated: nonesuch -->\n",
                              SimpleNamespace(file=SimpleNamespace(src_path="x.md")), None, None)


def test_every_param_has_one_owner_and_a_valid_default() -> None:
    from search.core.config import TrialConfig
    from search.strategies import OWNER, PARAMS, STRATEGIES, check_value

    assert set(PARAMS) == set(TrialConfig.names()) == set(OWNER)
    for name, param in PARAMS.items():
        assert check_value(name, param.default) is None, name
        assert param.help
    for name in STRATEGIES:
        assert STRATEGIES.get(name).summary


def test_registering_a_strategy_makes_it_searchable_and_ablatable(tmp_path: Path) -> None:
    """One definition is enough: the validator, TrialConfig and ablate's variants all see it."""
    from search import strategies
    from search.tools.ablate import variants
    from search.core.config import TrialConfig
    from search.space.parse import parse_space
    from search.strategies.base import OWNER, PARAMS, Param, Strategy

    name = "test_only_remedy"
    strategies.register(Strategy(name, Param(str, "off", "a remedy for this test", choices=("off", "on")),
                                 "regularization", "a remedy defined only here", off="off"))
    try:
        space = parse_space({"study": "s", "params": {name: {"choices": ["off", "on"]}}})
        assert space.param(name).choices == ("off", "on")
        with pytest.raises(Exception, match="allowed: off, on"):
            parse_space({"study": "s", "params": {name: "sideways"}})
        config = TrialConfig(**{name: "on"})
        assert [(p, off) for p, off, _ in variants(config, space)] == [(name, "off")]
    finally:
        strategies.unregister(name)
    assert name not in PARAMS and name not in OWNER and name not in TrialConfig.names()


# Attribute names Optuna keeps private that we read (see the table in search/storage/__init__.py).
_OPTUNA_PRIVATE_ATTRS = {"_storage", "_study_id", "_trial_id", "_thread_local", "_get_stale_trial_ids",
                         "_create_new_trial", "_version_manager", "_backend", "_cached_all_trials", "_get_trials"}


def _optuna_private_uses(source: str) -> list[str]:
    """Imports of Optuna's private modules or names, and reads of its private attributes on objects
    other than ``self``/``cls`` (our own classes' private attributes are ours)."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "optuna":
            if any(part.startswith("_") for part in node.module.split(".")) or \
                    any(a.name.startswith("_") for a in node.names):
                found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names
                      if a.name.split(".")[0] == "optuna" and any(p.startswith("_") for p in a.name.split("."))]
        elif isinstance(node, ast.Attribute) and node.attr in _OPTUNA_PRIVATE_ATTRS:
            if not (isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"}):
                found.append(f".{node.attr}")
    return found


def test_optuna_internals_only_in_the_storage_package() -> None:
    outside = {}
    for path in sorted((ROOT / "search").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("search/storage/"):
            continue
        hits = _optuna_private_uses(path.read_text(encoding="utf-8"))
        if hits:
            outside[rel] = hits
    assert outside == {}, f"Optuna internals outside search/storage: {outside}"


@pytest.mark.parametrize("line", [
    "from optuna.storages._rdb import models",
    "from optuna.storages._cached_storage import _CachedStorage",
    "import optuna.storages._grpc.server",
    "storage = study._storage",
    "tid = trial._trial_id",
])
def test_the_internals_check_catches_each_form(line: str) -> None:
    assert _optuna_private_uses(line), line
    assert not _optuna_private_uses("x = self._storage\nfrom optuna.storages import RDBStorage")


def _annotation(param: Any) -> str:
    kind = param.kind.__name__
    if param.list_ok:
        kind = f"{kind} | list[Any]"
    return f"{kind} | None" if param.nullable else kind


def test_trial_config_declares_every_registered_param_statically() -> None:
    """TrialConfig's annotated fields are the registry's params, in order, with their types, so type
    checkers and readers see them; the message is the block to paste when a strategy is added."""
    from search.core.config import TrialConfig
    from search.strategies import PARAMS

    declared = {n: t for n, t in TrialConfig.__annotations__.items() if not n.startswith("_")}
    expected = {name: _annotation(param) for name, param in PARAMS.items()}
    assert list(declared.items()) == list(expected.items()), \
        "search/core/config.py's fields are stale; paste:\n" + "\n".join(f"    {n}: {t}" for n, t in expected.items())


def test_a_config_built_before_the_registry_refuses_unknown_params() -> None:
    code = ("import sys\nfrom search.core.config import TrialConfig\n"
            "assert 'search.strategies' not in sys.modules\n"
            "TrialConfig(lr=0.1)\n"
            "try:\n    TrialConfig(learning_rate=0.1)\nexcept TypeError as e:\n    print('refused', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("refused unknown params learning_rate")


def _private_imports(source: str) -> list[str]:
    """Another module's private names, imported (``from search.x import _y``) or read through the
    module (``from search.data import cache`` then ``cache._locked``)."""
    import ast

    tree = ast.parse(source)
    private = lambda name: name.startswith("_") and not name.startswith("__")  # noqa: E731
    hits = [f"from {n.module} import {a.name}" for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and n.module and n.module.split(".")[0] == "search"
            for a in n.names if private(a.name)]
    ours = {a.asname or a.name for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and n.module and n.module.split(".")[0] == "search" for a in n.names}
    ours |= {a.asname or a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
             for a in n.names if a.name.split(".")[0] == "search"}
    hits += [f"{n.value.id}.{n.attr}" for n in ast.walk(tree) if isinstance(n, ast.Attribute)
             and isinstance(n.value, ast.Name) and n.value.id in ours and private(n.attr)]
    return hits


def test_the_private_names_check_sees_imports_and_module_attributes() -> None:
    assert _private_imports("from search.data.cache import _locked") == ["from search.data.cache import _locked"]
    assert _private_imports("from search.data import cache\nwith cache._locked(d): pass") == ["cache._locked"]
    assert _private_imports("from search.data import cache\ncache.locked(d)\nself._x = os._exit") == []


def test_no_module_imports_another_modules_private_names() -> None:
    found = {p.relative_to(ROOT).as_posix(): hits for p in sorted((ROOT / "search").rglob("*.py"))
             if (hits := _private_imports(p.read_text(encoding="utf-8")))}
    assert found == {}, f"private names imported across modules: {found}"


def test_every_package_declares_its_public_api() -> None:
    import ast

    missing = []
    for init in sorted((ROOT / "search").rglob("__init__.py")):
        tree = ast.parse(init.read_text(encoding="utf-8"))
        names = {t.id for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign))
                 for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)}
        imported_all = any(isinstance(n, ast.ImportFrom) and any(a.name == "__all__" for a in n.names) for n in tree.body)
        if "__all__" not in names and not imported_all:
            missing.append(init.relative_to(ROOT).as_posix())
    assert missing == [], f"packages without __all__: {missing}"
