"""Bridge worker-process futures into Twisted, for the stages that use process pools."""

from __future__ import annotations

from concurrent.futures import Future
from typing import TypeVar

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

T = TypeVar("T")


def deferred_from_future(future: Future[T]) -> Deferred[T]:
    """A Deferred fired on the reactor thread when a `concurrent.futures` future completes."""
    deferred: Deferred[T] = Deferred()

    def fire(fut: Future[T]) -> None:
        exc = fut.exception()
        if exc is not None:
            deferred.errback(Failure(exc))
        else:
            deferred.callback(fut.result())

    future.add_done_callback(lambda fut: reactor.callFromThread(fire, fut))
    return deferred
