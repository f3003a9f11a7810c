"""Work done once however many ask at the same time, its results kept in a small LRU.

The chart and the services' first batches cost the gateway (and the services) up to a couple of seconds
each; many clients asking for the same thing at once must not multiply that.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class _Pending:
    """A computation in flight: the callers waiting for it get its result or its exception."""

    def __init__(self):
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class SharedResults:
    """Results by key: the last ``size`` kept (least recently used dropped first), each computed once while
    others ask for it (they wait for that computation and share its result or its exception).

    ``computed`` counts the computations started, for metrics and tests.
    """

    def __init__(self, size: int):
        self.size = size
        self.computed = 0
        self._kept: OrderedDict[Hashable, Any] = OrderedDict()
        self._pending: dict[Hashable, _Pending] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], Any], keep: Callable[[Any], bool] = lambda _: True) -> Any:
        """The result for ``key``: kept, or being computed by another caller (waited for), or computed here.

        ``keep`` says whether a result may be kept (an answer with a service's error is not: the next caller
        asks again); an exception is never kept.
        """
        with self._lock:
            if key in self._kept:
                self._kept.move_to_end(key)
                return self._kept[key]
            pending = self._pending.get(key)
            leader = pending is None
            if leader:
                pending = self._pending[key] = _Pending()
                self.computed += 1
        if not leader:
            pending.done.wait()
            if pending.error is not None:
                raise pending.error
            return pending.result
        try:
            pending.result = compute()
        except BaseException as exc:
            pending.error = exc
            raise
        finally:
            with self._lock:
                if pending.error is None and keep(pending.result):
                    self._kept[key] = pending.result
                    while len(self._kept) > self.size:
                        self._kept.popitem(last=False)
                del self._pending[key]
            pending.done.set()
        return pending.result

    def holds(self, keys: list[Hashable]) -> bool:
        """Whether every one of ``keys`` has its result kept (asking for them computes nothing)."""
        with self._lock:
            return all(key in self._kept for key in keys)
