"""Run the gateway under waitress: ``python -m gateway.serve`` (HOST, PORT, GATEWAY_THREADS from the environment).

The gateway is the one process browsers and scripts reach, so it runs on a server that slow clients
cannot stall: waitress reads every request whole on its event loop, and only complete requests take
one of its worker threads (a half-sent request costs a socket, not a thread). gunicorn's threaded
worker gives a thread to a connection as soon as its first bytes arrive, so a few slow clients stop it
(gunicorn's docs recommend a buffering proxy in front for that reason); the framework services stay on
gunicorn, reached only by the gateway.
"""

from __future__ import annotations

import os
import signal
import sys

from waitress import serve

from .wsgi import app


def main() -> None:
    """Serve until SIGTERM or SIGINT."""
    # SIGTERM (docker stop, Ctrl-C of `make run`'s group) ends the process like Ctrl-C: waitress closes
    # its sockets on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    max_upload = int(os.environ.get("MAX_UPLOAD_BYTES", 10 * 1024 * 1024))
    # Behind a proxy (an Ingress controller), the client's address comes from X-Forwarded-For, trusted only
    # from GATEWAY_TRUSTED_PROXY ("*" for any peer: only where nothing but the proxy can reach the gateway).
    trusted_proxy = os.environ.get("GATEWAY_TRUSTED_PROXY") or None
    proxy = {"trusted_proxy": trusted_proxy, "trusted_proxy_headers": {"x-forwarded-for"},
             "trusted_proxy_count": 1} if trusted_proxy else {}
    serve(
        app,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
        threads=int(os.environ.get("GATEWAY_THREADS", "16")),  # fan-out calls wait on several services at once
        connection_limit=int(os.environ.get("GATEWAY_CONNECTION_LIMIT", "1000")),
        channel_timeout=int(os.environ.get("GATEWAY_IDLE_TIMEOUT_S", "30")),  # drop a connection silent this long
        # Waitress buffers a body whole before the app sees it: cap that at twice the upload limit, so a
        # slightly too large upload still gets the app's JSON 413 and a huge one is cut off early.
        max_request_body_size=2 * max_upload,
        ident="mnistcmp-gateway",
        clear_untrusted_proxy_headers=True,
        **proxy,
    )


if __name__ == "__main__":
    main()
