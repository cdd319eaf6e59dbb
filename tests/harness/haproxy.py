"""Several ``central serve`` instances behind HAProxy, for the scale-out tests (issue 14).

``HAProxy(backends, workdir=...)`` renders deploy/central/haproxy.cfg, the shipped file,
with only its ``bind`` address and its ``server`` lines replaced, checks it with
``haproxy -c``, and runs Debian's haproxy in the foreground (``-db``) as a child
process, its log (stdout: the config logs there) in ``workdir/haproxy.log``.

``start_instances(data_dir, count)`` starts ``count`` CentralService on ONE data
directory (one ``central init``, one service key, one central.conf), each on its own
port, each with its own log file. Only meaningful with the metadata in PostgreSQL
(``--central-store=postgres+s3`` or CENTRAL_DATABASE_URL): on the SQLite default the
instances would share one file and their upload locks would not reach each other.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

from tests.harness.central import CentralError, CentralService, free_port

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "deploy" / "central" / "haproxy.cfg"
HAPROXY = os.environ.get("CENTRAL_HAPROXY", "/usr/sbin/haproxy")

_BIND = re.compile(r"^(\s*)bind\s+\S+(.*)$", re.MULTILINE)
_SERVER = re.compile(r"^(\s*)server\s+\S+\s+\S+(.*)$", re.MULTILINE)
#: Lines of the shipped global section that need root (chroot, dropping privileges).
_ROOT_ONLY = re.compile(r"^\s*(chroot|user|group)\s+\S+\s*$", re.MULTILINE)
#: One line of the shipped log-format: "... <frontend> <backend>/<server> <method> <path>
#: <status> ...".
_LOG_LINE = re.compile(r"\s(?P<backend>[\w.-]+)/(?P<server>[\w.<>-]+)\s(?P<method>[A-Z]+)"
                       r"\s(?P<path>\S+)\s(?P<status>-?\d+)\s")


class HAProxyError(Exception):
    pass


def render_config(backends: list[str], port: int, *, template: Path = CONFIG) -> str:
    """The shipped config with ``bind 127.0.0.1:<port>`` and one ``server centralN
    <backend>`` line per backend (each with the first shipped server line's options)."""
    if not backends:
        raise ValueError("at least one backend is needed")
    text = template.read_text(encoding="utf-8")
    binds = _BIND.findall(text)
    servers = list(_SERVER.finditer(text))
    if len(binds) != 1 or not servers:
        raise HAProxyError(f"{template}: expected one bind line and server lines")
    text = _BIND.sub(lambda m: f"{m.group(1)}bind 127.0.0.1:{port}{m.group(2)}", text)
    servers = list(_SERVER.finditer(text))
    indent, options = servers[0].group(1), servers[0].group(2)
    lines = "\n".join(f"{indent}server central{i} {address}{options}"
                      for i, address in enumerate(backends, start=1))
    # The shipped server lines are one block: replace it as a whole.
    text = text[:servers[0].start()] + lines + text[servers[-1].end():]
    if os.geteuid() != 0:
        text = _ROOT_ONLY.sub("", text)
    return text


class HAProxy:
    """Debian's haproxy on the rendered shipped config. ``start()``, ``stop()``,
    ``log_text()``, ``requests()``."""

    def __init__(self, backends: list[str], *, port: int | None = None,
                 workdir: Path) -> None:
        self.backends = list(backends)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "haproxy.cfg"
        self.log_path = self.workdir / "haproxy.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> None:
        """Render and check the config, start haproxy, wait until it accepts connections."""
        if self.proc is not None and self.proc.poll() is None:
            raise HAProxyError("already running")
        self.config_path.write_text(render_config(self.backends, self.port),
                                    encoding="utf-8")
        checked = subprocess.run([HAPROXY, "-c", "-f", str(self.config_path)],
                                 capture_output=True, text=True, timeout=30)
        if checked.returncode != 0:
            raise HAProxyError(f"haproxy -c refused the config: {checked.stdout}"
                               f"{checked.stderr}")
        log = self.log_path.open("ab")
        try:
            # -db: foreground, no daemon; the test holds the process and its pid.
            self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(self.config_path)],
                                         stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise HAProxyError(f"haproxy exited {self.proc.returncode}:\n"
                                   + self.log_text()[-2000:])
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise HAProxyError("haproxy did not listen in time:\n"
                                       + self.log_text()[-2000:]) from None
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM (HAProxy's hard stop: connections are closed), then wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def requests(self, method: str | None = None,
                 path_prefix: str = "") -> list[tuple[str, str, str, int]]:
        """Requests HAProxy logged: (server, method, path, status), in log order.
        ``server`` is ``centralN`` (N: 1-based index in ``backends``) or ``<NOSRV>``."""
        out = []
        for match in _LOG_LINE.finditer(self.log_text()):
            if method is not None and match["method"] != method:
                continue
            if not match["path"].startswith(path_prefix):
                continue
            out.append((match["server"], match["method"], match["path"],
                        int(match["status"])))
        return out

    def per_server(self, method: str, path_prefix: str = "") -> Counter[str]:
        """How many ``method`` requests each server took."""
        return Counter(server for server, *_ in self.requests(method, path_prefix))

    def __enter__(self) -> HAProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_instances(data_dir: Path, count: int = 3) -> list[CentralService]:
    """``count`` running CentralService on one shared data directory.

    The first makes the data directory (and, under --central-store=postgres[+s3], its
    central.conf: a fresh database and bucket); the others run ``central init`` on it
    again, which leaves it as it is (checked: the same service key). Each instance logs
    to ``<data_dir>-serve-<n>.log``. On failure, those already started are stopped."""
    if count < 1:
        raise ValueError("count must be >= 1")
    data_dir = Path(data_dir)
    started: list[CentralService] = []
    try:
        for n in range(1, count + 1):
            service = CentralService(data_dir, start=False)
            if n == 1 and service.database_url() is None \
                    and not os.environ.get("CENTRAL_DATABASE_URL"):
                raise CentralError("several instances need the metadata in PostgreSQL"
                                   " (--central-store=postgres+s3): on SQLite their"
                                   " upload locks would not reach each other")
            if started and service.service_key != started[0].service_key:
                raise CentralError("central init changed the shared data directory's key")
            service.log_path = data_dir.parent / f"{data_dir.name}-serve-{n}.log"
            started.append(service)
            service.start()
    except BaseException:
        for service in started:
            service.stop()
        raise
    return started
