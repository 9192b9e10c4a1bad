"""Hints in every request of the ``openai`` client, without touching the call sites.

:class:`OpenAIInstrumentor` wraps ``create`` of the client's chat-completions and
responses resources (sync and async; streaming goes through the same method) on
the resource *classes*, so clients built before :meth:`~OpenAIInstrumentor.instrument`
are covered too, and so is everything that calls the client (LangChain's
``ChatOpenAI``, the OpenAI Agents SDK). At call time the wrapper reads the hints
for the span the call is made under and merges them into the call's
``extra_body`` / ``extra_headers``:

* the client merges ``extra_body`` into the JSON body *shallowly*, so the hint
  object is merged into a copy of the caller's own ``extra_body`` (their
  ``extra_body["nvext"]`` keys are kept, and win over ours at every depth);
* a header the caller set (per call, or as the client's ``default_headers``) wins;
* nothing learned, or a body path blocked by a caller value that is not an
  object: the call goes out exactly as the caller wrote it.

The caller's dicts are never modified. Nothing here raises into the application.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from otel_adaptive import hints, profiles

_logger = logging.getLogger(__name__)

#: (module, class) pairs whose ``create`` is wrapped; the Async ones are coroutines.
_TARGETS: tuple[tuple[str, str], ...] = (
    ("openai.resources.chat.completions", "Completions"),
    ("openai.resources.chat.completions", "AsyncCompletions"),
    ("openai.resources.responses", "Responses"),
    ("openai.resources.responses", "AsyncResponses"),
)
_METHOD = "create"

_lock = threading.Lock()
#: class -> (its original ``create``, our wrapper of it)
_installed: dict[type, tuple[Any, Any]] = {}
_state = {"active": False}
_warned: set[str] = set()


class OpenAIInstrumentor:
    """Turns hint injection into the ``openai`` client on and off (process-wide).

    ``OpenAIInstrumentor().instrument()`` is all it takes; calling it again changes
    nothing, and :meth:`uninstrument` puts the original methods back.
    """

    def instrument(self, **_: Any) -> bool:
        """Wrap the client's ``create`` methods; False when ``openai`` is not importable."""
        try:
            with _lock:
                if _state["active"]:
                    return True
                classes = _target_classes()
                if classes is None:
                    return False
                for cls in classes:
                    original = cls.__dict__[_METHOD]
                    earlier = _installed.get(cls)
                    if earlier is not None and earlier[0] is not original:
                        continue  # ours from an earlier round, beneath someone else's wrapper
                    wrapper = _wrap(original)
                    _installed[cls] = (original, wrapper)
                    setattr(cls, _METHOD, wrapper)
                _state["active"] = True
                return True
        except Exception:
            _logger.warning("otel-adaptive: instrumenting the openai client failed", exc_info=True)
            return False

    def uninstrument(self, **_: Any) -> None:
        """Put the original methods back (a wrapper someone added on top of ours is kept,
        and ours beneath it passes calls through untouched)."""
        with _lock:
            _state["active"] = False
            for cls, (original, wrapper) in list(_installed.items()):
                # Identity, not attributes: wrapt proxies forward attribute reads.
                if cls.__dict__.get(_METHOD) is wrapper:
                    setattr(cls, _METHOD, original)
                    del _installed[cls]

    @property
    def is_instrumented(self) -> bool:
        return _state["active"]


def _target_classes() -> list[type] | None:
    import importlib

    classes = []
    for module_name, class_name in _TARGETS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            _warn_once("import", "otel-adaptive: the openai package is not installed")
            return None
        cls = getattr(module, class_name, None)
        if isinstance(cls, type) and _METHOD in cls.__dict__:
            classes.append(cls)
    return classes


def _wrap(original: Callable[..., Any]) -> Callable[..., Any]:
    import inspect

    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def create_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            if _state["active"]:
                kwargs = _with_hints(self, kwargs)
            return await original(self, *args, **kwargs)

        return create_async

    @functools.wraps(original)
    def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _state["active"]:
            kwargs = _with_hints(self, kwargs)
        return original(self, *args, **kwargs)

    return create


def _with_hints(resource: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's keyword arguments with the hints merged in (or ``kwargs`` itself)."""
    try:
        service = hints._current_service()
        found = None if service is None else service.wire_hints()
        if found is None:
            return kwargs
        wire = found[1]
        changed = dict(kwargs)
        if wire.body_path is not None and wire.body:
            try:
                changed["extra_body"] = profiles.merged_body(
                    kwargs.get("extra_body"), wire.body_path, wire.body
                )
            except profiles.Collision as exc:
                _warn_once("collision", f"otel-adaptive: {exc}; the request was left unchanged")
                return kwargs
        if wire.headers:
            caller: Mapping[str, Any] | None = kwargs.get("extra_headers")
            client = getattr(resource, "_client", None)
            defaults = getattr(client, "_custom_headers", None)
            if type(defaults) is not dict and not isinstance(defaults, Mapping):
                defaults = None
            if caller or defaults:
                unset = profiles.missing_headers(caller, defaults)
                added = {name: value for name, value in wire.headers.items() if unset(name)}
            else:  # the common case: nobody set headers of their own
                added = wire.headers
            if added:
                changed["extra_headers"] = {**(caller or {}), **added}
        return changed
    except Exception:  # the request goes out as the caller wrote it
        _logger.debug("otel-adaptive: adding hints to an openai request failed", exc_info=True)
        return kwargs


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        _logger.warning(message)
