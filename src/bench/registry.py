"""Where a model family comes from, by name. Three places, looked up in this order:

1. bench's own families: `bench.objective.OBJECTIVES` (name -> "module:Class");
2. a file named on the command line with `--objective-file PATH.py:Class` (`register_file`); it is kept in the
   environment variable BENCH_OBJECTIVE_FILES, so worker processes (`--jobs`, a local Ray) find it too;
3. installed plugins: the entry-point group `bench.objectives`, as pytest and Hydra find theirs. A package declares
   `[project.entry-points."bench.objectives"] myfamily = "mypackage.module:MyFamily"` and, once installed, `bench
   search myfamily` finds it with no change to bench.

A name is imported only when it is asked for, so `bench --help` stays light. A plugin cannot replace a family of
bench's own: such an entry point is listed as hidden (`bench objectives`) and never loaded.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

GROUP = "bench.objectives"
FILES_ENV = "BENCH_OBJECTIVE_FILES"


@dataclass(frozen=True)
class Entry:
    name: str
    ref: str  # "module:Class", or "/path/to/file.py:Class"
    origin: str  # "bench", "file" or the plugin's distribution name


def _files() -> dict[str, str]:
    try:
        return json.loads(os.environ.get(FILES_ENV) or "{}")
    except ValueError:
        return {}


def _plugins() -> list[Entry]:
    from importlib.metadata import entry_points

    return [Entry(ep.name, ep.value, f"plugin {ep.dist.name if ep.dist else '?'}") for ep in entry_points(group=GROUP)]


def entries() -> tuple[dict[str, Entry], list[Entry]]:
    """(every usable name -> its entry, the plugin entries hidden by a name taken before them)."""
    from bench.objective import OBJECTIVES

    found = {n: Entry(n, ref, "bench") for n, ref in OBJECTIVES.items()}
    for n, ref in _files().items():
        found.setdefault(n, Entry(n, ref, "file"))
    hidden = []
    for e in _plugins():
        if e.name in found:
            hidden.append(e)
        else:
            found[e.name] = e
    return found, hidden


def names() -> list[str]:
    return sorted(entries()[0])


def objective_class(name: str) -> type:
    found = entries()[0]
    if name not in found:
        raise KeyError(f"unknown objective '{name}'; available: {', '.join(sorted(found))} (a family of your own: "
                       f"--objective-file PATH.py:Class, or an installed '{GROUP}' entry point)")
    return load_ref(found[name].ref)


def load_ref(ref: str) -> type:
    """The class a "module:Class" or "path/to/file.py:Class" reference names."""
    where, _, attr = ref.rpartition(":")
    if not where or not attr:
        raise ValueError(f"'{ref}': expected module:Class or path/to/file.py:Class")
    module = _load_file(Path(where)) if where.endswith(".py") else importlib.import_module(where)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"'{ref}': {where} has no '{attr}'") from None


def _load_file(path: Path):
    """Import a user's file as a module of its own (in sys.modules, so its classes pickle and joblib files load)."""
    path = path.resolve()
    if not path.is_file():
        raise ValueError(f"{path}: no such objective file")
    name = f"bench_objective_file_{path.stem}"
    module = sys.modules.get(name)
    if module is not None and getattr(module, "__file__", None) == str(path):
        return module
    if str(path.parent) not in sys.path:  # as for a script: the file may import modules beside it
        sys.path.append(str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def register_file(name: str, spec: str) -> type:
    """`--objective-file PATH.py:Class` for objective `name`: check that it loads to an Objective subclass, then make it
    visible to this process and the workers it starts. Returns the class."""
    from bench.objective import OBJECTIVES, Objective

    path, sep, attr = spec.rpartition(":")
    if not sep or not path.endswith(".py") or not attr:
        raise ValueError(f"--objective-file: expected PATH.py:Class, got '{spec}'")
    if name in OBJECTIVES:
        raise ValueError(f"--objective-file: '{name}' is one of bench's own families; give yours another name")
    ref = f"{Path(path).resolve()}:{attr}"
    cls = load_ref(ref)
    if not (isinstance(cls, type) and issubclass(cls, Objective)):
        raise ValueError(f"--objective-file: {spec} is not a subclass of bench.objective.Objective")
    os.environ[FILES_ENV] = json.dumps({**_files(), name: ref})
    return cls
