"""By-value functions sent once per worker (issue #16); the worker side is worker/functions.py.

``submit(fn)`` / ``map(fn)`` with a function cloudpickle pickles by value (a notebook's, a
lambda, a local function) pickle it on its own, hash the bytes (blake2b, ~1 µs) and send the
bytes only to a worker that has not had them (``WorkerRecord.functions_sent``; a replaced
worker is a new record, so it starts empty). An importable function travels by reference
inside the arguments, as before.

The manager's pickling (~65 µs for a small notebook function) is the larger cost, but a
plain cache of the bytes would be wrong: cloudpickle captures the *current* values of the
globals and closure cells the function uses. So the bytes are reused only while everything
cloudpickle would capture is provably the same (:func:`_snapshot`): the same code object and
attributes, and every referenced global, closure cell, default and annotation the *same
object* as when pickled — and each of those immutable (numbers, strings, bytes, tuples of
them, importable modules / functions / classes, which pickle by reference) or a by-value
function that passes the same test. A function that uses a list, a dict, an array, an
instance… is pickled afresh on every call (its hash still spares the worker the bytes).
Any new import (``len(sys.modules)``) invalidates every entry: cloudpickle records imported
submodules too.
"""
from __future__ import annotations

import hashlib
import itertools
import operator
import sys
import types
import weakref
from typing import Any, Callable

import cloudpickle

from ..errors import SerializationError
from ..protocol import codec

MAX_TRACKED = 4096  # hashes remembered per worker (the worker keeps 256; a miss is resent)


def by_value(fn: Callable[..., Any]) -> tuple[bytes, bytes] | None:
    """``(hash, cloudpickled bytes)`` of a function that travels by value; None for one that
    the worker can import (its reference is a few bytes in the arguments)."""
    is_function = type(fn) is types.FunctionType
    if is_function:
        entry = _entries.get(fn)
        if entry is _IMPORTABLE:
            return None  # (were it rebound in its module since, the arguments carry it by value)
        if entry is not None and entry[0] == len(sys.modules) and _unchanged(fn, entry[1], 0):
            return entry[2]
    if codec._fast_dumps(fn) is not None:
        if is_function:
            _remember(fn, _IMPORTABLE)
        return None
    snapshot = _snapshot(fn, 0, set()) if is_function and _extract is not None else None
    try:
        data = cloudpickle.dumps(fn, protocol=codec.PROTOCOL)
    except Exception as exc:
        raise SerializationError(f"the function cannot be pickled: {type(exc).__name__}: {exc}") from exc
    result = hashlib.blake2b(data, digest_size=16).digest(), data
    if snapshot is not None:
        _remember(fn, (len(sys.modules), snapshot, result))
    return result


def _remember(fn: Callable[..., Any], entry: Any) -> None:
    if len(_entries) >= MAX_TRACKED:  # a recursive function's entry holds itself: bound them
        _entries.clear()
    try:
        _entries[fn] = entry
    except TypeError:  # not weak-referenceable
        pass


# -- the manager's cache of pickled bytes, valid while nothing captured changed ------------
_cp = getattr(cloudpickle, "cloudpickle", None)
_extract = getattr(_cp, "_extract_code_globals", None)  # the names cloudpickle captures
_entries: "weakref.WeakKeyDictionary[Any, tuple[int, tuple, tuple[bytes, bytes]]]" = weakref.WeakKeyDictionary()
_MISSING = object()
_IMPORTABLE = ("importable",)  # the entry of a function that travels by reference
_SEP = object()  # between keyword defaults and annotations in _attrs
_flat = itertools.chain.from_iterable
_MAX_DEPTH = 4
_ATOMS = (type(None), bool, int, float, complex, str, bytes, range, type(Ellipsis))
_BASE_GLOBALS = ("__package__", "__name__", "__path__", "__file__")  # cloudpickle keeps these too


def _attrs(fn: types.FunctionType) -> tuple:
    """The attributes cloudpickle keeps, flat so that they compare by identity in one pass:
    ``(name, qualname, module, doc, defaults, k, v, k, v, …, _SEP, k, v, …)`` with the
    keyword defaults before ``_SEP`` and the annotations after it."""
    kwdefaults = fn.__kwdefaults__
    annotations = fn.__annotations__
    return (fn.__name__, fn.__qualname__, fn.__module__, fn.__doc__, fn.__defaults__,
            *(_flat(kwdefaults.items()) if kwdefaults else ()), _SEP,
            *(_flat(annotations.items()) if annotations else ()))


def _frozen(value: Any, depth: int, seen: set[int], nested: list) -> bool:
    """Pickles the same for as long as it is the same object (a by-value function: checked
    again at each use, through ``nested``)."""
    if isinstance(value, _ATOMS) and type(value) in _ATOMS:
        return True
    if type(value) in (tuple, frozenset):
        return all(_frozen(v, depth, seen, nested) for v in value)
    if isinstance(value, types.ModuleType):
        name = getattr(value, "__name__", None)
        return name != "__main__" and sys.modules.get(name) is value
    if isinstance(value, (type, types.BuiltinFunctionType, types.FunctionType)):
        if codec._fast_dumps(value) is not None:
            return True  # pickled by reference (its name)
        if type(value) is types.FunctionType:
            if id(value) in seen:  # recursion: checked where it started
                return True
            sub = _snapshot(value, depth + 1, seen)
            if sub is not None:
                nested.append((value, sub))
                return True
    return False


def _snapshot(fn: types.FunctionType, depth: int, seen: set[int]) -> tuple | None:
    """What cloudpickle captures of ``fn``, by identity; None when some of it may change."""
    if depth > _MAX_DEPTH or fn.__dict__:
        return None
    seen.add(id(fn))
    nested: list = []
    attrs = _attrs(fn)
    if not all(v is _SEP or _frozen(v, depth, seen, nested) for v in attrs[4:]):
        return None
    g = fn.__globals__
    names = tuple(_extract(fn.__code__)) + _BASE_GLOBALS
    values = tuple(g.get(name, _MISSING) for name in names)
    if not all(v is _MISSING or _frozen(v, depth, seen, nested) for v in values):
        return None
    cells = tuple(_cell(c) for c in fn.__closure__ or ())
    if not all(v is _MISSING or _frozen(v, depth, seen, nested) for v in cells):
        return None
    return fn.__code__, attrs, names, values, cells, tuple(nested)


def _cell(cell: Any) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # empty cell
        return _MISSING


def _same(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(map(operator.is_, a, b))


def _unchanged(fn: types.FunctionType, snap: tuple, depth: int) -> bool:
    """Is everything :func:`_snapshot` saw still the same object? (At every cached call:
    the comparisons run in C, ~1 µs for a small function.)"""
    code, attrs, names, values, cells, nested = snap
    if fn.__code__ is not code or fn.__dict__:
        return False
    if not _same(_attrs(fn), attrs):
        return False
    get = fn.__globals__.get
    if not all(map(operator.is_, map(get, names, itertools.repeat(_MISSING)), values)):
        return False
    closure = fn.__closure__
    if closure is None:
        if cells:
            return False
    elif not _same(tuple(map(_cell, closure)), cells):
        return False
    return not nested or all(_unchanged(sub_fn, sub, depth + 1) for sub_fn, sub in nested)


def attach(request: Any, function: tuple[bytes, bytes], sent: set[bytes], force: bool = False) -> bool:
    """Name ``function`` in ``request``; add its bytes unless the worker already has them.
    True when the bytes went along."""
    digest, data = function
    request.function_hash = digest
    if force or digest not in sent:
        request.function = data
        if len(sent) >= MAX_TRACKED:
            sent.clear()
        sent.add(digest)
        return True
    return False
