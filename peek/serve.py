"""python -m peek serve: the built site as static files, on this machine only.

A page that fetches weights.bin or imports an ES module must come from http://, not file://, so
this is the smallest server that does it right: the standard library's http.server, bound to
127.0.0.1, with the content types a browser insists on (a module script served as text/plain is
refused) and Cache-Control: no-cache, so a rebuilt site shows up on the next reload.
"""
import errno
import functools
import os
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from numpy_gpt.machinery.errors import UserError

# By extension, before Python's mimetypes (which reads /etc/mime.types and differs between machines).
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".bin": "application/octet-stream",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}


class SiteHandler(SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler with fixed content types, no caching, and quiet logs."""
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **CONTENT_TYPES}

    def __init__(self, *args, verbose=False, **kwargs):
        self.verbose = verbose      # first: the base __init__ handles the whole request
        super().__init__(*args, **kwargs)

    def end_headers(self):
        self.send_header("Cache-Control", "no-cache")     # the browser asks again after every rebuild
        super().end_headers()

    def log_message(self, format, *args):
        if self.verbose:
            super().log_message(format, *args)


class SiteServer(ThreadingHTTPServer):
    daemon_threads = True     # a browser's open keep-alive connection never delays Ctrl-C
    allow_reuse_port = False  # a second server on a busy port must fail, not share it

    def handle_error(self, request, client_address):
        """A browser that closes a connection mid-response is routine, not a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def make_server(directory, port=8000, host="127.0.0.1", verbose=False):
    """Check the folder and the port, and bind -> a SiteServer, not yet serving."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be in 0..65535 (0 picks a free one), got {port}")
    folder = Path(directory)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--dir {directory} is a file; pass the folder `python -m peek build` wrote")
    if not folder.is_dir():
        raise UserError(f"no site at {directory}: run `python -m peek build` first")
    if not os.access(folder, os.R_OK | os.X_OK):
        raise UserError(f"cannot read {directory} (permission denied)")
    if not (folder / "index.html").is_file():
        raise UserError(f"{directory} has no index.html, so it is not a built site: "
                        f"run `python -m peek build` to make one")
    handler = functools.partial(SiteHandler, directory=str(folder.resolve()), verbose=verbose)
    try:
        return SiteServer((host, port), handler)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {host} is in use: pick another with --port, "
                            f"or --port 0 for a free one") from None
        raise UserError(f"cannot serve on {host}:{port}: {e.strerror}") from None


def serve(directory, port=8000, host="127.0.0.1", verbose=False):
    """Serve directory at http://host:port/ until Ctrl-C. Port 0 picks a free port; the printed URL
    shows the real one."""
    with make_server(directory, port, host, verbose) as server:
        print(f"serving {directory} at http://{host}:{server.server_address[1]}/ (Ctrl-C to stop)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("\nstopped", file=sys.stderr)


def add_serve_arguments(parser):
    parser.add_argument("--dir", default="site/", help="the built site to serve")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1; 0 picks a free one")
    parser.add_argument("--verbose", action="store_true", help="log every request on stderr")


def run_serve(args):
    serve(args.dir, args.port, verbose=args.verbose)
    return 0
