"""A bounded hand-off between two pipeline threads.

Two policies: ``block`` (the producer waits: every frame of a file is processed) and ``latest``
(the producer overwrites the waiting item: a live camera never builds a backlog, and the overwritten
frame is counted as dropped).
"""
from __future__ import annotations

import collections
import threading
from typing import Generic, TypeVar

from ..enums import StrEnum

T = TypeVar("T")


class ChannelPolicy(StrEnum):
    """What ``put`` does when the channel is full."""

    BLOCK = "block"  # the producer waits: nothing is lost
    LATEST = "latest"  # the oldest waiting item is overwritten and counted as dropped


class Closed(Exception):
    """The channel was closed and, for ``get``, nothing is left in it."""


class Channel(Generic[T]):
    def __init__(self, capacity: int, policy: ChannelPolicy | str = ChannelPolicy.BLOCK) -> None:
        if capacity < 1 or policy not in {p.value for p in ChannelPolicy}:
            raise ValueError(f"bad channel capacity {capacity} or policy {policy!r}")
        self.capacity = capacity
        self.policy = ChannelPolicy(policy)
        self._items: collections.deque[T] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: T) -> int:
        """Hand ``item`` over; returns how many older items it displaced (``latest`` policy only)."""
        with self._cond:
            dropped = 0
            while len(self._items) >= self.capacity and not self._closed:
                if self.policy == ChannelPolicy.LATEST:
                    self._items.popleft()
                    dropped += 1
                else:
                    self._cond.wait()
            if self._closed:
                raise Closed
            self._items.append(item)
            self._cond.notify_all()
            return dropped

    def get(self, timeout: float | None = None) -> T:
        """The oldest item; raises Closed once closed and drained, TimeoutError after ``timeout``."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                raise TimeoutError
            if not self._items:
                raise Closed
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def wait_for_space(self) -> None:
        """Block until a put would not wait or displace anything (lets a stage pull only on demand)."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._items) < self.capacity or self._closed)
            if self._closed:
                raise Closed

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
