"""Request-side components: each a small `from_crawler` class.

RobotsTxtMiddleware fixes two weaknesses of Scrapy's:

- a race: when several requests to one host wait together for robots.txt, the
  parsed rules are handed to the first waiter only (its `asFuture` consumes the
  Deferred's result), and every other waiter gets `None`, which Scrapy reads as
  "allowed". Here every waiter gets its own relay of the result;
- dirty files: a NUL byte glued to `User-agent: *` made the whole group
  unmatched, so everything was allowed. NUL bytes are removed before parsing
  (invalid UTF-8 is already dropped by Scrapy's decoder).
"""

from __future__ import annotations

from typing import Any

from scrapy.downloadermiddlewares.robotstxt import RobotsTxtMiddleware as ScrapyRobotsTxtMiddleware
from scrapy.http import Request, Response
from scrapy.utils.defer import maybe_deferred_to_future
from scrapy.utils.httpobj import urlparse_cached
from twisted.internet.defer import Deferred


class RobotsTxtMiddleware(ScrapyRobotsTxtMiddleware):
    """Scrapy's robots.txt middleware, with the rules delivered to every waiting request."""

    async def robot_parser(self, request: Request) -> Any:
        netloc = urlparse_cached(request).netloc
        pending = self._parsers.get(netloc)
        if isinstance(pending, Deferred):
            waiter: Deferred[Any] = Deferred()

            def relay(result: Any) -> Any:
                waiter.callback(result)
                return result  # keep the result for the next waiter

            pending.addBoth(relay)
            return await maybe_deferred_to_future(waiter)
        return await super().robot_parser(request)

    async def _parse_robots(self, response: Response, netloc: str, request: Request) -> None:
        if b"\0" in response.body:
            self._stats.inc_value("newsingest/robots/nul_bytes")
            response = response.replace(body=response.body.replace(b"\0", b""))
        await super()._parse_robots(response, netloc, request)
