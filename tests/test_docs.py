"""Documentation keeps up with the code: every command and option, every public name."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import click

import iddetective
from iddetective.cli import main

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_command_and_option_is_documented() -> None:
    contracts = (DOCS / "contracts.md").read_text()
    assert isinstance(main, click.Group)
    for name, command in main.commands.items():
        assert f"iddetective {name}" in contracts, f"command {name} is not in docs/contracts.md"
        for parameter in command.params:
            if isinstance(parameter, click.Option):
                flag = max(parameter.opts, key=len)
                assert f"`{flag}" in contracts, f"{name} {flag} is not in docs/contracts.md"


def test_every_module_declares_its_public_names() -> None:
    for module_info in pkgutil.walk_packages(iddetective.__path__, "iddetective."):
        if module_info.name.endswith("__main__"):
            continue
        module = importlib.import_module(module_info.name)
        exported = getattr(module, "__all__", None)
        assert exported is not None, f"{module_info.name} has no __all__"
        for name in exported:
            assert hasattr(module, name), f"{module_info.name}.__all__ names missing {name}"
            assert getattr(module, name).__doc__, f"{module_info.name}.{name} has no docstring"
