"""Serve a directory over HTTP on 127.0.0.1: the process behind CaddyReleaseServer.

Run as `python -m ops.sandbox.standins.static_server --root DIR --port N`.
Files under /repos/ are sent as application/json, as GitHub's API sends them.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

LOG = logging.getLogger("static_server")
JSON_PREFIX = "/repos/"


class FileHandler(SimpleHTTPRequestHandler):
    """Static files with one log line per request through `logging`."""

    def guess_type(self, path):
        if self.path.startswith(JSON_PREFIX):
            return "application/json"
        return super().guess_type(path)

    def list_directory(self, path):
        # Release servers list nothing; a directory read is a client bug worth a 404.
        self.send_error(404, "directory listing is disabled")
        return None

    def log_message(self, format, *args):
        LOG.info("%s %s", self.address_string(), format % args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="directory to serve")
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    options = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    handler = functools.partial(FileHandler, directory=options.root)
    with ThreadingHTTPServer(("127.0.0.1", options.port), handler) as server:
        server.daemon_threads = True
        LOG.info("serving %s on 127.0.0.1:%d", options.root, options.port)
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
