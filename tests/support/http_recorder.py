"""A real local HTTP server that records requests and answers from a script (robots, webhooks) or
from a function of the request (a stand-in for a stateful API such as Grafana's)."""

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Recorded:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    method: str = "POST"


Responder = Callable[[Recorded], tuple[int, Any]]


@dataclass
class Recorder:
    url: str
    requests: list[Recorded] = field(default_factory=list)
    # Answers to give, in order, as (status, JSON body); when empty, 200 {"errcode": 0}.
    script: list[tuple[int, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # When set, answers every request (the script is not used).
    responder: Responder | None = None


@contextmanager
def http_recorder(responder: Responder | None = None) -> Iterator[Recorder]:
    recorder = Recorder(url="", responder=responder)

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            raw = self.rfile.read(length)
            parts = urlsplit(self.path)
            request = Recorded(
                parts.path,
                {k: v[0] for k, v in parse_qs(parts.query).items()},
                {k.lower(): v for k, v in self.headers.items()},
                json.loads(raw) if raw else None,
                self.command,
            )
            with recorder.lock:
                recorder.requests.append(request)
                if recorder.responder is not None:
                    status, answer = recorder.responder(request)
                elif recorder.script:
                    status, answer = recorder.script.pop(0)
                else:
                    status, answer = 200, {"errcode": 0, "errmsg": "ok"}
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = _handle  # noqa: N815 (http.server's names)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    # A short poll: shutdown() waits up to one poll interval (0.5 s by default, in every test).
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="http-recorder",
                              daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
