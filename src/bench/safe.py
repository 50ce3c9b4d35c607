"""Text that comes from users, files or data, made safe where it goes: study names that become folder names, cells of
CSV and Markdown tables, and URLs whose passwords must not be shown. (HTML is escaped in bench.report, console markup
with rich.markup.escape where a line is printed.)"""
from __future__ import annotations

import re
import unicodedata

MAX_NAME = 100  # a study's name is a folder name, and `bench confirm` adds `-confirm-<trial>` to it


def study_name(name: str) -> str:
    """The name, if it can be a study's folder name under --results as it is; else ValueError saying why."""
    if not name or not name.strip():
        raise ValueError("study name is empty")
    if len(name) > MAX_NAME:
        raise ValueError(f"study name is {len(name)} characters long; at most {MAX_NAME}")
    if "/" in name or "\\" in name:
        raise ValueError(f"study name {name!r} holds a path separator; a study is one folder under --results")
    if name in (".", "..") or name.startswith("."):
        raise ValueError(f"study name {name!r} starts with '.'; it would be a hidden or parent folder")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        raise ValueError(f"study name {name!r} holds a control character")
    if any(unicodedata.category(c) == "Cs" for c in name):  # bytes of the command line that were not UTF-8
        raise ValueError(f"study name {name!r} is not valid UTF-8")
    return name


def csv_cell(value):
    """A cell a spreadsheet will not run as a formula: text starting with = + - @ (or a tab or CR) gets a leading '.
    Numbers, and text that is a plain number such as -0.05, stay as they are."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?%?")


def md_cell(value) -> str:
    """A Markdown table cell: pipes escaped, line breaks as <br>, so a value cannot end its row or table."""
    text = str(value).replace("\\", "\\\\").replace("|", "\\|")
    return re.sub(r"\r\n|\r|\n", "<br>", text)


_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<password>[^@\s]*)(?P<at>@)")


def mask(text: str) -> str:
    """Every URL's password in text shown as ***: postgresql://bench:secret@host/db -> postgresql://bench:***@host/db.
    (SQLAlchemy's make_url(...).render_as_string(hide_password=True) does it for one URL; errors hold them in prose.)"""
    return _PASSWORD.sub(lambda m: f"{m['head']}***{m['at']}", str(text))
