"""Serve the real Koji hub (kojihub.kojixmlrpc) with waitress, for tests/kojihub.py.

Run with PYTHONPATH=<unpacked koji source> so that the source's own `koji` package is the one
the hub imports. It sets the config paths Apache's SetEnv would set, and serves
GET /kojifiles/... read-only from KojiDir like the stock httpd `Alias /kojifiles`, so that the
stock `koji download-build` and `--topurl` work against it.

    python kojihub_wsgi.py PORT HUB_CONF HUB_CONF_DIR KOJI_DIR
"""

from __future__ import annotations

import mimetypes
import os
import sys
from pathlib import Path

import waitress
from kojihub.kojixmlrpc import application as hub

PREFIX = "/kojifiles/"


def make_app(conf: str, conf_dir: str, koji_dir: Path):
    root = koji_dir.resolve()

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if environ["REQUEST_METHOD"] in ("GET", "HEAD") and path.startswith(PREFIX):
            return files(environ, start_response, path[len(PREFIX) :])
        environ["koji.hub.ConfigFile"] = conf
        environ["koji.hub.ConfigDir"] = conf_dir
        return hub(environ, start_response)

    def files(environ, start_response, rel):
        target = (root / rel).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        headers = [("Content-Type", kind), ("Content-Length", str(target.stat().st_size))]
        start_response("200 OK", headers)
        if environ["REQUEST_METHOD"] == "HEAD":
            return [b""]
        wrapper = environ.get("wsgi.file_wrapper")
        handle = open(target, "rb")  # the server closes it after sending
        return wrapper(handle, 1 << 20) if wrapper else iter(lambda: handle.read(1 << 20), b"")

    return app


def main() -> None:
    port, conf, conf_dir, koji_dir = sys.argv[1:5]
    app = make_app(conf, conf_dir, Path(koji_dir))
    os.umask(0o022)
    waitress.serve(app, host="127.0.0.1", port=int(port), threads=4, _quiet=True)


if __name__ == "__main__":
    main()
