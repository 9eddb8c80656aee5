"""The bundled offline demo news site ("The Demo Courier") and its loopback HTTP server.

`newsingest demo` and the crawl tests use it: `serve_demo_site()` binds a free
port on 127.0.0.1, builds the site for that base URL and yields the server
with the ground-truth manifest.
"""

from crawler.demo.server import DemoServer, serve_demo_site
from crawler.demo.site import SITE_NAME, build_site, demo_source_config

__all__ = ["SITE_NAME", "DemoServer", "build_site", "demo_source_config", "serve_demo_site"]
