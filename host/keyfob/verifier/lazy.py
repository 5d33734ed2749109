"""SQLAlchemy Core names (and the tables of :mod:`.models`) for the admin operations, imported the
first time one is used, so that opening a database and checking a login import no SQLAlchemy
(``import sqlalchemy`` alone takes longer than a ``keyfob validate`` may).

A module binds its names with ``select, update, _U = names(globals(), "sqlalchemy:select update",
"models:user_table as _U")``: each is a placeholder until one of them is used (called, or an
attribute read); then every placeholder of every module is replaced in its module by the real
object, and the call goes on with the real arguments. After that the names are the real ones: no
cost on later calls. A placeholder is only ever called or read from (``select(_U)``,
``_U.c.name``), never kept elsewhere before its first use.
"""

from __future__ import annotations

import importlib
import threading

_BINDINGS: list[tuple[dict, str, str, str]] = []  # (module globals, alias, module, attribute)
_LOCK = threading.Lock()
_PACKAGE = __name__.rpartition(".")[0]


class _Lazy:
    __slots__ = ("_module", "_attr")

    def __init__(self, module: str, attr: str):
        self._module = module
        self._attr = attr

    def _real(self):
        load()
        return getattr(importlib.import_module(self._module), self._attr)

    def __getattr__(self, name):
        return getattr(self._real(), name)

    def __call__(self, *args, **kwargs):
        args = [a._real() if type(a) is _Lazy else a for a in args]
        kwargs = {k: (v._real() if type(v) is _Lazy else v) for k, v in kwargs.items()}
        return self._real()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<not yet imported: {self._module}.{self._attr}>"


def names(module_globals: dict, *specs: str) -> list:
    """Placeholders for ``specs`` (``"MODULE:ATTR [as ALIAS] ATTR2 ..."``; ``MODULE`` is absolute or
    a module of this package), in order, bound under their aliases in ``module_globals``."""
    out = []
    for spec in specs:
        module, _, attrs = spec.partition(":")
        if "." not in module and module != "sqlalchemy":
            module = f"{_PACKAGE}.{module}"
        words = attrs.split()
        i = 0
        while i < len(words):
            attr, alias = words[i], words[i]
            if i + 2 < len(words) and words[i + 1] == "as":
                alias = words[i + 2]
                i += 2
            i += 1
            _BINDINGS.append((module_globals, alias, module, attr))
            out.append(_Lazy(module, attr))
    return out


def load() -> None:
    """Import what the placeholders stand for and put the real objects in their modules."""
    with _LOCK:
        for g, alias, module, attr in _BINDINGS:
            if type(g.get(alias)) is _Lazy:
                g[alias] = getattr(importlib.import_module(module), attr)
