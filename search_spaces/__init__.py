"""bench's shipped search spaces (YAML package data). Installed as `bench.search_spaces`; `bench.space` reads the files
through importlib.resources. This file only makes the folder a package, so editable and wheel installs both find it."""
