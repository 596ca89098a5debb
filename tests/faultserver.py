"""A real HTTP server on 127.0.0.1 that serves test media and misbehaves on purpose.

Routes (FILE is a name in the served directory):
  /media/FILE            the file, with Content-Length
  /flaky/FILE            500 for the first two requests of each path, then the file
  /down/FILE             503 while `state["down"]` is true, then the file
  /404                   not found
  /stall                 headers and 10 bytes, then silence for STALL_S seconds
  /redirect-loop         302 to itself
  /redirect-file         302 to file:///etc/passwd
  /big                   no Content-Length, streams zeros past any small cap (bounded)
  /short                 Content-Length 200000, sends 1000 bytes, closes
  /html                  a text/html page
Every loop here is bounded in count and time, so the server always stops by itself.
"""
from __future__ import annotations

import os
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STALL_S = 8.0
BIG_BYTES = 12 << 20


class FaultServer:
    def __init__(self, directory: str):
        self.directory = directory
        self.hits: Counter = Counter()
        self.state = {"down": True}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, code, body=b"", ctype="application/octet-stream", headers=()):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _video_head(self, length=None):
                """Headers of a 200 video response whose body the caller then breaks."""
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header(*(("Content-Length", str(length)) if length else ("Connection", "close")))
                self.end_headers()
                self.close_connection = True

            def _file(self, name):
                path = os.path.join(server.directory, os.path.basename(name))
                if not os.path.isfile(path):
                    return self._send(404, b"missing")
                with open(path, "rb") as f:
                    self._send(200, f.read(), "video/mp4")

            def do_GET(self):  # noqa: C901 - one branch per fault is the point
                path = self.path
                server.hits[path] += 1
                n = server.hits[path]
                if path.startswith("/media/"):
                    return self._file(path[7:])
                if path.startswith("/flaky/"):
                    return self._send(500, b"oops") if n <= 2 else self._file(path[7:])
                if path.startswith("/down/"):
                    return self._send(503, b"down") if server.state["down"] else self._file(path[6:])
                if path == "/stall":
                    self._video_head(1_000_000)
                    self.wfile.write(b"\0" * 10)
                    self.wfile.flush()
                    return time.sleep(STALL_S)
                if path == "/redirect-loop":
                    return self._send(302, headers=[("Location", "/redirect-loop")])
                if path == "/redirect-file":
                    return self._send(302, headers=[("Location", "file:///etc/passwd")])
                if path == "/big":
                    self._video_head()
                    chunk = b"\0" * 65536
                    try:
                        for _ in range(BIG_BYTES // len(chunk)):
                            self.wfile.write(chunk)
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    return
                if path == "/short":
                    self._video_head(200_000)
                    return self.wfile.write(b"\1" * 1000)
                if path == "/html":
                    return self._send(200, b"<html><body>not a video</body></html>", "text/html; charset=utf-8")
                return self._send(404, b"not found", "text/plain")

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass           # clients hanging up on /big and /stall is the expected case

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
