"""A Scrapy extension that kills its own crawl process (SIGKILL) at the first response.

Used by tests/test_scaleout.py as a per-source EXTENSIONS entry to stand for a crawl that
crashes (segfault, OOM killer) after it has adopted its run record: Scrapyd then shows the
job `finished`, and only the missing close record tells that it failed.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

from scrapy import signals


class CrashOnFirstResponse:
    @classmethod
    def from_crawler(cls, crawler: Any) -> CrashOnFirstResponse:
        extension = cls()
        crawler.signals.connect(extension.response_received, signal=signals.response_received)
        return extension

    def response_received(self, response: Any, request: Any, spider: Any) -> None:
        logging.getLogger(__name__).error("scaleout_crash: killing this crawl now")  # into the job's log file
        os.kill(os.getpid(), signal.SIGKILL)
