"""One error hierarchy: every exception class derives from TranslogError and lives in errors.py.

Every module of the package is imported (``pkgutil.walk_packages``) and every subclass of
``BaseException`` defined in translog is found (module attributes and, through
``__subclasses__``, classes nested anywhere else). Each must derive from
:class:`~translog.errors.TranslogError` and be defined in :mod:`translog.errors`, and the HTTP
layer's one table (:func:`translog.http.errors.status_for`) must give each a 4xx or 5xx status.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from types import ModuleType

import pytest

import translog
from translog import errors
from translog.errors import TranslogError
from translog.http.errors import STATUS, status_for

#: Modules not imported: ``translog.__main__`` runs the CLI when imported (it defines no class).
NOT_IMPORTED = frozenset({"translog.__main__"})


def modules() -> Iterator[ModuleType]:
    """Every module of the package, imported."""
    yield translog
    for info in pkgutil.walk_packages(translog.__path__, prefix="translog."):
        if info.name not in NOT_IMPORTED:
            yield importlib.import_module(info.name)


def _subclasses(cls: type[BaseException]) -> Iterator[type[BaseException]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def exception_classes() -> set[type[BaseException]]:
    """Every exception class defined in translog (after importing every module)."""
    found: set[type[BaseException]] = set()
    for module in modules():
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException):
                found.add(obj)
    found.update(_subclasses(BaseException))
    return {
        cls
        for cls in found
        if cls.__module__ == "translog" or cls.__module__.startswith("translog.")
    }


def name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def test_every_exception_class_is_a_translog_error_in_errors_py() -> None:
    offenders = []
    for cls in sorted(exception_classes(), key=name):
        problems = []
        if not issubclass(cls, TranslogError):
            problems.append("does not derive from TranslogError")
        if cls.__module__ != "translog.errors":
            problems.append("is not defined in translog.errors")
        if problems:
            offenders.append(f"{name(cls)} " + " and ".join(problems))
    assert not offenders, f"{len(offenders)} exception classes break the rule:\n" + "\n".join(
        offenders
    )


def translog_errors() -> list[type[TranslogError]]:
    """Every TranslogError subclass defined in translog/errors.py, the root included."""
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, TranslogError) and cls.__module__ == "translog.errors"
    ]


@pytest.mark.parametrize("cls", translog_errors(), ids=lambda cls: cls.__name__)
def test_every_translog_error_has_an_http_status(cls: type[TranslogError]) -> None:
    status, kind = status_for(cls("example"))
    assert 400 <= status < 600, f"{cls.__name__} maps to HTTP {status}"
    assert kind


def test_the_status_table_names_only_translog_errors() -> None:
    assert all(cls.__module__ == "translog.errors" for cls, _, _ in STATUS)
    # Most specific first: no row is shadowed by an earlier row of one of its bases.
    for i, (cls, _, _) in enumerate(STATUS):
        earlier = [c.__name__ for c, _, _ in STATUS[:i] if issubclass(cls, c)]
        assert not earlier, f"{cls.__name__} is shadowed by {earlier}"
