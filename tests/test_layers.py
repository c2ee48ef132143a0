"""The layers of src/ (pyproject.toml's [tool.importlinter], docs/design.md): no module
imports from a layer above its own, and no use case imports FastAPI."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"


def test_the_layers_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(PYPROJECT), no_cache=True, no_logo=True) == 0


def test_the_check_fails_on_an_import_up_a_layer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The control: the same contract with `kit` moved above the domains that use it must
    break (every domain imports kit), so a pass above means something."""
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    layers = config["contracts"][0]["layers"]
    layers.remove("reservations.kit")
    layers.insert(0, "reservations.kit")
    lines = ["[importlinter]", f"root_package = {config['root_package']}"]
    lines += [
        "[importlinter:contract:layers]",
        "name = kit on top",
        "type = layers",
        "layers =",
        *(f"    {layer}" for layer in layers),
    ]
    (tmp_path / ".importlinter").write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(ROOT)
    code = lint_imports(
        config_filename=str(tmp_path / ".importlinter"), no_cache=True, no_logo=True
    )
    assert code != 0
