"""The wheel's package list in pyproject.toml is exactly the package folders: none forgotten, none
that the checkout no longer has (tests/ and its rig are not among them)."""

import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[2]


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _package_folders() -> set[str]:
    """The packages under amo1c_sync/, plus those that package-dir maps in from other folders."""
    found = set(find_packages(str(ROOT), include=["amo1c_sync*"]))
    for name, folder in _setuptools().get("package-dir", {}).items():
        found.add(name)
        if Path(folder) == Path("."):
            continue  # the root is mapped for sync.ini alone (package-data); nothing under it is shipped
        base = ROOT / folder
        found |= {".".join((name, *d.relative_to(base).parts)) for d in base.rglob("*")
                  if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py"))}
    return found


def test_given_the_package_folders_when_compared_with_pyproject_then_the_lists_are_equal():
    listed = set(_setuptools()["packages"])
    found = _package_folders()
    assert found - listed == set(), f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    assert listed - found == set(), f"no such package folder: {sorted(listed - found)}"


def test_given_the_package_list_when_read_then_no_test_rig_is_shipped():
    listed = _setuptools()["packages"]
    assert not [p for p in listed if p.split(".")[0] == "tests" or ".testing" in p], listed
