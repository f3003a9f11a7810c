"""CPU time of the processes that serve an endpoint.

The processes are found by the TCP port the endpoint's URL names: every process that holds a listening socket on
that port (a gunicorn master and the workers that inherited its socket, TorchServe's Java frontend), plus all of
their descendants (gunicorn workers, TorchServe's Python backend workers). ``--server-pid`` names them instead.
A snapshot before and after a run gives the CPU seconds (user + system) the group spent in between; a process
that started in between counts from its start.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

try:
    import psutil
except ImportError as exc:  # pragma: no cover - a clear message instead of a traceback
    raise SystemExit("scripts/bench needs psutil in its venv: .venvs/dev/bin/pip install psutil") from exc

Snapshot = dict[tuple[int, float], float]  # (pid, create_time) -> CPU seconds


def is_local(host: str) -> bool:
    """Whether ``host`` is this machine (loopback or one of its addresses), so its processes can be seen."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    mine = {a.address for nics in psutil.net_if_addrs().values() for a in nics}
    return any(ipaddress.ip_address(a.split("%")[0]).is_loopback or a in mine for a in addresses)


def listening_pids(port: int) -> set[int]:
    """Pids of the processes with a TCP socket listening on ``port`` (any address), each raised to the top of its
    pre-fork family: psutil names one process per socket, and a gunicorn worker that holds the socket it inherited
    has a master (and sibling workers) that serve the port too. A parent with the very same command line is such a
    master (forked workers keep it); a parent with another command line (a shell, the bench itself) is not."""
    found = set()
    for connection in psutil.net_connections(kind="tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr and connection.laddr.port == port \
                and connection.pid:
            found.add(_prefork_root(connection.pid))
    return found


def _prefork_root(pid: int) -> int:
    try:
        process = psutil.Process(pid)
        command = process.cmdline()
        while (parent := process.parent()) is not None and parent.pid > 1 and parent.cmdline() == command:
            process = parent
        return process.pid
    except psutil.Error:
        return pid


def url_port(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


class ProcessGroup:
    """The server processes of one endpoint: ``roots`` and all their descendants, looked up at each snapshot."""

    def __init__(self, roots: set[int], how: str):
        self.roots = set(roots)
        self.how = how  # "port 8002" or "--server-pid"

    @classmethod
    def for_url(cls, url: str) -> ProcessGroup | None:
        """The processes listening on the URL's port, when the host is this machine and they can be found."""
        host = urlsplit(url).hostname or ""
        if not is_local(host):
            return None
        port = url_port(url)
        pids = listening_pids(port)
        return cls(pids, f"listening on port {port}") if pids else None

    def processes(self) -> list[psutil.Process]:
        found: dict[int, psutil.Process] = {}
        for pid in self.roots:
            try:
                root = psutil.Process(pid)
                found[pid] = root
                for child in root.children(recursive=True):
                    found[child.pid] = child
            except psutil.Error:
                continue
        return list(found.values())

    def pids(self) -> list[int]:
        return sorted(p.pid for p in self.processes())

    def describe(self) -> list[dict]:
        rows = []
        for process in self.processes():
            try:
                rows.append({"pid": process.pid, "name": process.name(), "ppid": process.ppid()})
            except psutil.Error:
                continue
        return sorted(rows, key=lambda r: r["pid"])

    def snapshot(self) -> Snapshot:
        taken: Snapshot = {}
        for process in self.processes():
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    taken[(process.pid, process.create_time())] = times.user + times.system
            except psutil.Error:
                continue
        return taken


def cpu_seconds_between(before: Snapshot, after: Snapshot) -> float:
    """CPU seconds spent between two snapshots by the processes alive at the second one."""
    return sum(max(0.0, spent - before.get(key, 0.0)) for key, spent in after.items())
