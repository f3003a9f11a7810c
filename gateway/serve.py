"""Run the gateway under waitress: ``python -m gateway.serve`` (HOST, PORT, GATEWAY_THREADS from the environment).

The gateway is the one process browsers and scripts reach, so it runs on a server that slow clients
cannot stall: waitress reads every request whole on its event loop, and only complete requests take
one of its worker threads (a half-sent request costs a socket, not a thread). gunicorn's threaded
worker gives a thread to a connection as soon as its first bytes arrive, so a few slow clients stop it
(gunicorn's docs recommend a buffering proxy in front for that reason); the framework services stay on
gunicorn, reached only by the gateway.

SIGTERM and SIGINT stop it within a few seconds, whatever is in flight: requests get ``STOP_GRACE_S`` to
finish, the active run is cancelled on its trainer and recorded as cancelled, then the process ends.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from waitress import create_server

from .wsgi import app

log = logging.getLogger(__name__)
STOP_GRACE_S = float(os.environ.get("GATEWAY_STOP_GRACE_S", "1"))


def main() -> None:
    """Serve until SIGTERM or SIGINT, then stop within a few seconds."""
    server = create_server(app, **server_options(os.environ))

    def stop(signum, _frame) -> None:
        # The first signal stops the gateway; another one (`make run` sends SIGTERM after Ctrl-C's SIGINT) must
        # not cut that short. The clean-up runs in a thread of its own, which then ends the process: an exception
        # raised from a signal handler can land inside waitress' event loop, whose bare excepts log it and serve
        # on (seen: a stopped gateway that kept serving until run-local killed it, its run left "running"), and
        # the handler itself may have interrupted the main thread holding a lock the clean-up needs.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        log.info("%s: stopping", signal.Signals(signum).name)
        threading.Thread(target=shut_down, args=(server,), name="stop", daemon=True).start()

    # SIGINT is installed explicitly: a background job of a non-interactive shell (`make run`'s script) starts
    # with SIGINT ignored, and Python then installs no KeyboardInterrupt handler of its own.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.print_listen("Serving on http://{}:{}")
    server.run()


def shut_down(server) -> None:
    """Stop taking requests, give those in flight STOP_GRACE_S, cancel the active run, then end the process
    (which closes every socket)."""
    try:
        # waitress' own shutdown: no new tasks, wait for the running ones up to the grace, drop the queued ones.
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=STOP_GRACE_S)
        stop = app.extensions.get("gateway.stop")
        if stop is not None:
            stop()
    except Exception:  # the process ends anyway
        log.exception("stopping the gateway")
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def server_options(environ) -> dict:
    """waitress' settings from the environment."""
    max_upload = int(environ.get("MAX_UPLOAD_BYTES", 10 * 1024 * 1024))
    # Behind a proxy (an Ingress controller), the client's address comes from X-Forwarded-For, trusted only
    # from GATEWAY_TRUSTED_PROXY ("*" for any peer: only where nothing but the proxy can reach the gateway).
    trusted_proxy = environ.get("GATEWAY_TRUSTED_PROXY") or None
    proxy = {"trusted_proxy": trusted_proxy, "trusted_proxy_headers": {"x-forwarded-for"},
             "trusted_proxy_count": 1} if trusted_proxy else {}
    return dict(
        host=environ.get("HOST", "127.0.0.1"),
        port=int(environ.get("PORT", "8000")),
        threads=int(environ.get("GATEWAY_THREADS", "16")),  # fan-out calls wait on several services at once
        connection_limit=int(environ.get("GATEWAY_CONNECTION_LIMIT", "1000")),
        channel_timeout=int(environ.get("GATEWAY_IDLE_TIMEOUT_S", "30")),  # drop a connection silent this long
        # Waitress buffers a body whole before the app sees it: cap that at twice the upload limit, so a
        # slightly too large upload still gets the app's JSON 413 and a huge one is cut off early.
        max_request_body_size=2 * max_upload,
        ident="mnistcmp-gateway",
        clear_untrusted_proxy_headers=True,
        **proxy,
    )


if __name__ == "__main__":
    main()
