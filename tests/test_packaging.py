"""What `pip install .` installs: only `bench`, with the repo's objectives/ and search_spaces/ inside it. The wheel itself
is built, installed into a clean venv and run from an empty folder by .ci/wheel; these tests keep pyproject.toml's
explicit package list in step with the tree, so no folder is left out of the wheel."""
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def setuptools_config():
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def folder_of(package: str, package_dir: dict[str, str]) -> Path:
    """Where setuptools takes a package from: the longest mapped prefix, else the "" root."""
    parts = package.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in package_dir:
            return REPO / package_dir[prefix] / Path(*parts[i:])
    return REPO / package_dir[""] / Path(*parts)


def test_every_package_folder_is_listed():
    cfg = setuptools_config()
    listed = set(cfg["packages"])
    assert {p.split(".")[0] for p in listed} == {"bench"}  # nothing else at the top level of site-packages
    expected = {".".join(("bench",) + p.parent.relative_to(REPO / "src" / "bench").parts)
                for p in (REPO / "src" / "bench").rglob("__init__.py")}
    for name in ("objectives", "search_spaces"):
        expected |= {".".join(("bench", name) + p.relative_to(REPO / name).parts)
                     for p in [REPO / name, *(d for d in (REPO / name).rglob("*") if d.is_dir() and d.name != "__pycache__")]}
    assert listed == expected
    for package in listed:
        assert folder_of(package, cfg["package-dir"]).is_dir(), package


def test_every_space_file_is_package_data():
    cfg = setuptools_config()
    data = cfg["package-data"]
    for f in (REPO / "search_spaces").rglob("*.yaml"):
        package = ".".join(("bench", "search_spaces") + f.parent.relative_to(REPO / "search_spaces").parts)
        assert "*.yaml" in data.get(package, []), f"{f} would not be in the wheel"


def test_shipped_spaces_are_read_through_the_package():
    from bench.space import list_spaces, shipped_space_dir

    assert shipped_space_dir().resolve() == (REPO / "search_spaces").resolve()  # this checkout's, through importlib
    assert "paper/tinynet_baseline" in list_spaces()
