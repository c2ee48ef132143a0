"""The test suite's layout (docs/testing.md): tests/<dir>/ mirrors src/reservations/<dir>/,
beside a few folders named here; test modules never import one another or a conftest (shared
helpers live in tests/support/); conftest.py files hold fixtures and hooks only."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src" / "reservations"

# Folders of tests with no package of that name in src/reservations/, and why.
NOT_A_PACKAGE = {
    "api": "the HTTP surface as a whole: isolation, OWASP, bad input, contract, client",
    "cli": "the commands as a user runs them (reservations/cli.py is a module)",
    "concurrency": "races against a live server, each with a control",
    "faults": "Redis killed or hung, crashes after commit, the stale map",
    "storm": "the Jepsen-style storm",
    "fuzz": "Schemathesis against /openapi.json",
    "deploy": "deploy/: nginx, graceful shutdown, manifests",
    "support": "helpers the tests share",
}


def _folders() -> list[Path]:
    return sorted(p for p in TESTS.iterdir() if p.is_dir() and p.name != "__pycache__")


def _test_modules() -> list[Path]:
    return sorted(TESTS.rglob("test_*.py"))


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(TESTS.parent).with_suffix("").parts)


def _imported(path: Path) -> list[tuple[int, str]]:
    """Every module an import statement of `path` names, absolute, with its line; for
    `from x import y` both x and x.y (y may be a module)."""
    package = _module_name(path).rsplit(".", 1)[0].split(".")
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[: len(package) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def _is_test_module_or_conftest(module: str) -> bool:
    parts = module.split(".")
    if parts[0] != "tests":
        return False
    last = parts[-1]
    if last != "conftest" and not last.startswith("test_"):
        return False
    return TESTS.parent.joinpath(*parts).with_suffix(".py").is_file()


def test_every_test_folder_mirrors_a_package_or_is_named_here() -> None:
    strays = [
        p.name for p in _folders() if p.name not in NOT_A_PACKAGE and not (SRC / p.name).is_dir()
    ]
    assert not strays, (
        f"no src/reservations/<dir>/ for tests/{', tests/'.join(strays)}: put tests in the folder "
        "of the package they test, or name the folder in NOT_A_PACKAGE with the reason"
    )


def test_every_test_folder_is_a_package() -> None:
    missing = [p.name for p in _folders() if not (p / "__init__.py").is_file()]
    assert not missing, f"no __init__.py in tests/{', tests/'.join(missing)}"


def test_no_test_module_imports_another_or_a_conftest() -> None:
    wrong = [
        f"{path.relative_to(TESTS.parent)}:{line} imports {module}"
        for path in _test_modules()
        for line, module in _imported(path)
        if _is_test_module_or_conftest(module)
    ]
    assert not wrong, (
        "test modules import test modules or a conftest; move what they need to "
        "tests/support/ and import it from there:\n" + "\n".join(wrong)
    )


def test_conftest_holds_only_fixtures_and_hooks() -> None:
    wrong = []
    for path in sorted(TESTS.rglob("conftest.py")):
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.ClassDef):
                wrong.append(f"{path.relative_to(TESTS.parent)}: class {node.name}")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                hook = node.name.startswith("pytest_")
                fixture = any(
                    "fixture" in ast.unparse(d.func if isinstance(d, ast.Call) else d)
                    for d in node.decorator_list
                )
                if not (hook or fixture):
                    wrong.append(f"{path.relative_to(TESTS.parent)}: def {node.name}")
    assert not wrong, (
        "conftest.py keeps fixtures and hooks; helpers go to tests/support/:\n" + "\n".join(wrong)
    )
