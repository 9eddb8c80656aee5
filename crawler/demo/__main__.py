"""`python -m crawler.demo serve [--port N] [--no-faults] [--keep DIR]`: browse the demo site."""

from __future__ import annotations

import argparse
import signal
import sys

from crawler.demo.server import serve_demo_site
from crawler.demo.site import demo_source_config


def _toml_snippet(base_url: str) -> str:
    cfg = demo_source_config(base_url)
    lines = ["[sources.demo]"]
    for key, value in cfg.items():
        rendered = ", ".join(f'"{v}"' for v in value) if isinstance(value, list) else None
        lines.append(f"{key} = [{rendered}]" if rendered is not None else f'{key} = "{value}"')
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crawler.demo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="build the demo site into a temporary directory; serve on 127.0.0.1")
    serve.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    serve.add_argument("--no-faults", action="store_true", help="serve the always-500 page as a normal page")
    serve.add_argument("--keep", metavar="DIR", help="build into DIR (kept) instead of a temporary directory")
    args = parser.parse_args(argv)

    with serve_demo_site(args.keep, faults=not args.no_faults, port=args.port) as (server, manifest):
        print(f"The Demo Courier: {server.base_url}/  ({len(manifest['articles'])} articles; "
              f"site files in {server.root})", flush=True)
        print("\nsources.toml snippet:\n\n" + _toml_snippet(server.base_url) + "\n", flush=True)
        print("Ctrl-C to stop.", flush=True)
        # SIGTERM (kill PID) should clean up the temporary build too, not just Ctrl-C.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
