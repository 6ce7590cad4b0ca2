"""The casbin line is chosen deliberately (casbin 1.43 + casbin-sqlalchemy-adapter 1.4): check what is installed."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import casbin


def _distribution_owning(module_file: str) -> set[str]:
    target = Path(module_file).resolve()
    owners = set()
    for distribution in importlib.metadata.distributions():
        for file in distribution.files or []:
            if Path(distribution.locate_file(file)).resolve() == target:
                owners.add(distribution.metadata["Name"].lower())
    return owners


def test_the_casbin_module_comes_from_casbin_1_43_and_not_pycasbin() -> None:
    assert importlib.metadata.version("casbin") == "1.43.0"
    assert _distribution_owning(casbin.__file__) == {"casbin"}
    installed = {d.metadata["Name"].lower() for d in importlib.metadata.distributions()}
    assert "pycasbin" not in installed, "pycasbin 2.x would silently replace the casbin 1.43 module"
    assert "sqlalchemy-adapter" not in installed, "sqlalchemy-adapter needs pycasbin>=2"


def test_the_adapter_is_casbin_sqlalchemy_adapter_1_4() -> None:
    version = importlib.metadata.version("casbin-sqlalchemy-adapter")
    assert version.startswith("1.4."), version
