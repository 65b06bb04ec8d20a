"""Serve the HMI's WSGI app with waitress in a background thread, with a clean stop."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import dash
from waitress import create_server, wasyncore
from waitress.trigger import trigger as WaitressTrigger

log = logging.getLogger(__name__)


class HmiServer:
    """Run a Dash app (or any WSGI app) under waitress on host:port in a daemon thread."""

    def __init__(
        self,
        app: dash.Dash | Callable[..., Any],
        host: str = "127.0.0.1",
        port: int = 8050,
        threads: int = 8,
    ) -> None:
        self._wsgi = app.server if isinstance(app, dash.Dash) else app
        self._host = host
        self._port = port
        self._threads = threads
        self._map: dict[int, Any] = {}
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        """Return the bound host (the configured one before start)."""
        return self._host

    @property
    def port(self) -> int:
        """Return the bound port; with port 0, the one the OS chose once started."""
        return self._port

    @property
    def url(self) -> str:
        """Return the base URL of the HMI, e.g. http://127.0.0.1:8050/."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}/"

    @property
    def running(self) -> bool:
        """Tell whether the serving thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Bind the socket now (errors surface here) and serve in a background thread."""
        if self._server is not None:
            raise RuntimeError("the HMI server is already started")
        self._map = {}
        self._server = create_server(
            self._wsgi,
            map=self._map,
            host=self._host,
            port=self._port,
            threads=self._threads,
            ident="beffroi",
        )
        listen = getattr(self._server, "effective_listen", None)
        if listen:
            self._host, self._port = listen[0][0], int(listen[0][1])
        else:
            self._host = self._server.effective_host
            self._port = int(self._server.effective_port)
        self._thread = threading.Thread(target=self._run, name="beffroi-hmi", daemon=True)
        self._thread.start()
        log.info("HMI serving on %s", self.url)

    def _run(self) -> None:
        try:
            self._server.run()
        except Exception:
            log.exception("HMI server loop failed")

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every connection, end the loop and the worker threads."""
        server, thread = self._server, self._thread
        if server is None:
            return
        triggers = [d for d in list(self._map.values()) if isinstance(d, WaitressTrigger)]
        if thread is not None and thread.is_alive() and triggers:
            # Close the sockets from inside the loop thread: an emptied map ends the loop,
            # and nothing touches the map from another thread while select() waits on it.
            triggers[0].pull_trigger(lambda: wasyncore.close_all(self._map, ignore_all=True))
            thread.join(timeout)
            if thread.is_alive():
                log.warning("HMI server loop did not stop within %.1f s", timeout)
        else:
            wasyncore.close_all(self._map, ignore_all=True)
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=timeout)
        self._server = None
        self._thread = None
        log.info("HMI server stopped")

    def __enter__(self) -> HmiServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
