"""A real Apache Kafka (KRaft, one combined broker+controller) for dev, tests and CI.

Kafka is assembled from Maven Central jars (no tarball download) into
``$EVENT_ROUTER_CACHE/kafka-<version>/libs`` (default cache: ``~/.cache/event-router``).

    python -m scripts.kafka fetch                  # resolve the jars once (needs java + mvn)
    python -m scripts.kafka start [--dir DIR]      # detached broker, prints the bootstrap
    python -m scripts.kafka start --sasl-user alice:secret   # clients must authenticate
    python -m scripts.kafka start --ssl-keystore broker.pem --ssl-cafile ca.pem   # TLS
    python -m scripts.kafka status|stop [--dir DIR]

Stdlib only, so it runs before the project's own dependencies are installed.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import fcntl
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"
DEPENDENCY_PLUGIN_VERSION = "3.8.1"
STARTED_LINE = "Kafka Server started"
# C1-only JIT + serial GC: ~2.8 s to start vs ~3.7 s with JVM defaults on 2 cores.
# Override with EVENT_ROUTER_KAFKA_JVM_OPTS (e.g. "" for full JIT when benchmarking).
DEFAULT_JVM_OPTS = "-XX:+UseSerialGC -XX:TieredStopAtLevel=1"

POM = f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>event-router</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{KAFKA_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId><artifactId>maven-dependency-plugin</artifactId>
        <version>{DEPENDENCY_PLUGIN_VERSION}</version>
      </plugin>
    </plugins>
  </build>
</project>
"""

# INFO to <kafka.logs.dir>/server.log, nothing on the console.
LOG4J2_CONFIG = """\
status = warn
shutdownHook = disable
appender.file.type = File
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
# the ~400-line config dump, six times per start (server.properties has what we set)
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
"""


def cache_root() -> Path:
    return Path(os.environ.get("EVENT_ROUTER_CACHE") or Path.home() / ".cache" / "event-router")


def kafka_home() -> Path:
    return cache_root() / f"kafka-{KAFKA_VERSION}"


def default_run_dir() -> Path:
    return cache_root() / "run" / "kafka"


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def fetch(*, quiet: bool = False) -> Path:
    """Resolve Kafka's runtime jars into ``kafka_home()/libs`` (instant when already done)."""
    home = kafka_home()
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".lock").open("w") as lock:  # parallel test sessions share the cache
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _fetch_locked(home, quiet)


def _fetch_locked(home: Path, quiet: bool) -> Path:
    libs, marker = home / "libs", home / "fetched.pom.xml"  # the pom the libs came from
    _write_if_changed(home / "log4j2.properties", LOG4J2_CONFIG)
    if marker.is_file() and marker.read_text() == POM and libs.is_dir():
        return libs
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool!r} is not on PATH: install a JDK 17+ and Maven first")
    (home / "pom.xml").write_text(POM)
    shutil.rmtree(libs, ignore_errors=True)
    if not quiet:
        print(f"fetching Kafka {KAFKA_VERSION} jars into {libs} ...", file=sys.stderr)
    goal = ["dependency:copy-dependencies", "-DincludeScope=runtime", "-DoutputDirectory=libs"]
    cmd = ["mvn", "-q", "-B", *goal]
    res = subprocess.run(cmd, cwd=home, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {home}:\n{res.stdout}{res.stderr}")
    marker.write_text(POM)
    return libs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _cluster_id() -> str:
    while True:  # 22-char base64url, like Kafka's Uuid; never starting with '-'
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log, after its last few ERROR/FATAL lines."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"({path} missing)"
    errors = [line for line in text if " ERROR " in line or " FATAL " in line][-8:]
    head = ["(errors)", *errors, "(tail)"] if errors else []
    return "\n".join([*head, *text[-lines:]])


def _is_kafka(pid: int) -> bool:
    try:
        return b"kafka.Kafka" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _java(logs_dir: Path, *args: str) -> list[str]:
    home = kafka_home()
    return [
        "java",
        "-Xms256m",
        "-Xmx512m",
        *shlex.split(os.environ.get("EVENT_ROUTER_KAFKA_JVM_OPTS", DEFAULT_JVM_OPTS)),
        "-cp",
        f"{home / 'libs'}/*",
        f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
        f"-Dkafka.logs.dir={logs_dir}",
        *args,
    ]


# The client listener's name when clients must authenticate (``Broker(sasl_users=...)``);
# with TLS as well it is SASL_SSL.
SASL_LISTENER = "SASL_PLAINTEXT"
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class Broker:
    """One Kafka node (broker + controller) on 127.0.0.1, with its data in ``dir``.

    With ``sasl_users`` ({name: password}) the client port is a SASL_PLAINTEXT listener
    that accepts each user by PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (the SCRAM
    credentials are written into the cluster metadata when the storage is formatted),
    and nothing reaches the broker unauthenticated. Names and passwords go into a
    properties file and a JAAS line as they are: keep them to letters, digits and ``-_``.

    With ``ssl_keystore`` (a PEM file: the broker's unencrypted PKCS#8 private key, then
    its certificate chain) the client port speaks TLS: SSL, or SASL_SSL with
    ``sasl_users``; the certificate must name 127.0.0.1. ``ssl_cafile`` (PEM CA
    certificates) is required with it and must trust that certificate: Kafka refuses to
    start when its own client could not connect to its own listener. With
    ``ssl_client_auth`` every client must also present a certificate that ``ssl_cafile``
    trusts (mutual TLS).
    """

    def __init__(self, dir: Path | None = None, *,
                 sasl_users: dict[str, str] | None = None,
                 ssl_keystore: Path | None = None, ssl_cafile: Path | None = None,
                 ssl_client_auth: bool = False) -> None:
        if (ssl_keystore is None) != (ssl_cafile is None):
            raise ValueError("ssl_keystore and ssl_cafile go together")
        if ssl_client_auth and ssl_keystore is None:
            raise ValueError("ssl_client_auth needs ssl_keystore and ssl_cafile")
        self.dir = (Path(dir) if dir is not None else default_run_dir()).absolute()
        self.sasl_users = dict(sasl_users or {})
        self.ssl_keystore = Path(ssl_keystore).absolute() if ssl_keystore else None
        self.ssl_cafile = Path(ssl_cafile).absolute() if ssl_cafile else None
        self.ssl_client_auth = ssl_client_auth
        self.port: int | None = None
        self.controller_port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise RuntimeError("broker not started")
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def log_file(self) -> Path:
        return self.dir / "logs" / "server.log"

    @property
    def out_file(self) -> Path:
        return self.dir / "kafka.out"

    def start(self, timeout_s: float = 90.0, *, detach: bool = False) -> str:
        """Start the node and wait for it; return the bootstrap address.

        A fresh Broker gets new ports and empty storage; after ``stop()`` it comes
        back on the same ports with the same data. ``detach`` leaves it running
        when this Python process exits (the CLI uses it).
        """
        if self._proc is not None and self._proc.poll() is None:
            raise RuntimeError(f"Kafka already running (pid {self._proc.pid})")
        fetch()
        data = self.dir / "data"
        if self.port is None or self.controller_port is None:
            self.port, self.controller_port = _free_port(), _free_port()
            shutil.rmtree(data, ignore_errors=True)
            shutil.rmtree(self.dir / "logs", ignore_errors=True)
            self.out_file.unlink(missing_ok=True)
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        props = self.dir / "server.properties"
        props.write_text(self._properties(data))
        if not (data / "meta.properties").exists():
            cid = _cluster_id()
            fmt = ["kafka.tools.StorageTool", "format", "--standalone", "-t", cid, "-c", str(props)]
            for name, password in self.sasl_users.items():
                for mechanism in SASL_MECHANISMS[1:]:
                    fmt += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
            cmd = _java(self.dir / "logs", *fmt)
            res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
            if res.returncode != 0:
                raise RuntimeError(f"storage format failed:\n{res.stdout}{res.stderr}")
        log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        with self.out_file.open("ab") as out:
            self._proc = subprocess.Popen(
                _java(self.dir / "logs", "kafka.Kafka", str(props)),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() signals the whole group
            )
        self._pid = self._proc.pid
        if not detach:
            atexit.register(self.stop)
        self._wait_started(log_offset, timeout_s)
        return self.bootstrap

    @property
    def listener(self) -> str:
        """The client listener's name, which is also its security protocol."""
        if self.ssl_keystore is not None:
            return "SASL_SSL" if self.sasl_users else "SSL"
        return SASL_LISTENER if self.sasl_users else "PLAINTEXT"

    def _properties(self, data: Path) -> str:
        port, cport = self.port, self.controller_port
        client = self.listener
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"listeners={client}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
                f"advertised.listeners={client}://127.0.0.1:{port}",
                f"listener.security.protocol.map={client}:{client},CONTROLLER:PLAINTEXT",
                "controller.listener.names=CONTROLLER",
                f"inter.broker.listener.name={client}",
                *self._sasl_properties(),
                *self._ssl_properties(),
                f"controller.quorum.bootstrap.servers=127.0.0.1:{cport}",
                f"log.dirs={data}",
                "num.partitions=1",
                "auto.create.topics.enable=true",
                "offsets.topic.num.partitions=1",
                "offsets.topic.replication.factor=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "",
            ]
        )

    def _sasl_properties(self) -> list[str]:
        """The client listener's SASL settings; none without ``sasl_users``. The broker
        talks to itself on that listener too, as the first user, by PLAIN."""
        if not self.sasl_users:
            return []
        prefix = f"listener.name.{self.listener.lower()}"
        (name, password), *_ = self.sasl_users.items()
        users = " ".join(f'user_{u}="{p}"' for u, p in self.sasl_users.items())
        plain = "org.apache.kafka.common.security.plain.PlainLoginModule required"
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required"
        return [
            f"sasl.enabled.mechanisms={','.join(SASL_MECHANISMS)}",
            "sasl.mechanism.inter.broker.protocol=PLAIN",
            f'{prefix}.plain.sasl.jaas.config={plain} username="{name}" '
            f'password="{password}" {users};',
            *(f"{prefix}.{m.lower()}.sasl.jaas.config={scram};" for m in SASL_MECHANISMS[1:]),
        ]

    def _ssl_properties(self) -> list[str]:
        """The client listener's TLS settings (PEM files, as Kafka reads them since
        2.7); none without ``ssl_keystore``."""
        if self.ssl_keystore is None:
            return []
        lines = ["ssl.keystore.type=PEM", f"ssl.keystore.location={self.ssl_keystore}",
                 "ssl.truststore.type=PEM", f"ssl.truststore.location={self.ssl_cafile}"]
        if self.ssl_client_auth:
            # with the listener's prefix: unprefixed, SASL_SSL listeners ignore it (KIP-684)
            lines.append(f"listener.name.{self.listener.lower()}.ssl.client.auth=required")
        return lines

    def _wait_started(self, log_offset: int, timeout_s: float) -> None:
        assert self._proc is not None and self.port is not None
        deadline = time.monotonic() + timeout_s
        while not (self._started_since(log_offset) and _port_open(self.port)):
            if self._proc.poll() is not None:
                msg = f"Kafka exited with code {self._proc.returncode}\n{self._tails()}"
                self.stop()
                raise RuntimeError(msg)
            if time.monotonic() > deadline:
                msg = f"Kafka not started after {timeout_s}s\n{self._tails()}"
                self.stop()
                raise TimeoutError(msg)
            time.sleep(0.1)

    def _tails(self) -> str:
        out, log = self.out_file, self.log_file
        return f"--- {out}\n{_tail(out)}\n--- {log}\n{_tail(log)}"

    def _started_since(self, offset: int) -> bool:
        try:
            with self.log_file.open("rb") as f:
                f.seek(offset)
                return STARTED_LINE.encode() in f.read()
        except OSError:
            return False

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the node (controlled shutdown), SIGKILL it after ``timeout_s``."""
        pid, proc = self._pid, self._proc
        self._pid = self._proc = None
        atexit.unregister(self.stop)
        if pid is None or (proc is not None and proc.poll() is not None):
            return
        if proc is None and not _is_kafka(pid):
            return  # already gone (or the pid was reused): nothing of ours to stop
        for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            if _wait_exit(pid, proc, wait_s):
                break

    def restart(self, timeout_s: float = 90.0) -> str:
        """Stop, then start again on the same ports with the same data."""
        self.stop()
        return self.start(timeout_s)


def _wait_exit(pid: int, proc: subprocess.Popen[bytes] | None, timeout_s: float) -> bool:
    if proc is not None:
        try:
            proc.wait(timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _is_kafka(pid):
            return True
        time.sleep(0.1)
    return False


# --- CLI -------------------------------------------------------------------


def _read_state(run_dir: Path) -> dict[str, object] | None:
    try:
        state: dict[str, object] = json.loads((run_dir / "state.json").read_text())
        return state
    except (OSError, ValueError):
        return None


def _healthy(state: dict[str, object]) -> bool:
    pid, bootstrap = state.get("pid"), state.get("bootstrap")
    if not isinstance(pid, int) or not isinstance(bootstrap, str):
        return False
    return _is_kafka(pid) and _port_open(int(bootstrap.rsplit(":", 1)[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.kafka",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["fetch", "start", "stop", "status"])
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help=f"run dir (default {default_run_dir()}); fetch ignores it",
    )
    parser.add_argument(
        "--sasl-user",
        action="append",
        default=[],
        metavar="NAME:PASSWORD",
        help="start: clients must authenticate (SASL_PLAINTEXT; PLAIN or SCRAM) as one of "
        "these users (repeatable)",
    )
    parser.add_argument(
        "--ssl-keystore",
        type=Path,
        metavar="PEM",
        help="start: clients connect by TLS (SSL, or SASL_SSL with --sasl-user); the "
        "broker's unencrypted PKCS#8 key followed by its certificate chain, for 127.0.0.1",
    )
    parser.add_argument(
        "--ssl-cafile",
        type=Path,
        metavar="PEM",
        help="start, with --ssl-keystore: the CA certificates the broker trusts (its own "
        "certificate's, which Kafka checks at start; and the clients' with --ssl-client-auth)",
    )
    parser.add_argument(
        "--ssl-client-auth",
        action="store_true",
        help="start: clients must present a certificate that --ssl-cafile trusts",
    )
    args = parser.parse_args(argv)
    run_dir: Path = args.dir or default_run_dir()
    state = _read_state(run_dir)

    if args.command == "fetch":
        print(fetch())
    elif args.command == "start":
        if state is not None and _healthy(state):
            print(state["bootstrap"])
            return 0
        if state is not None:  # stale: make sure nothing of it is left running
            _stop_state(state)
        users = {name: pw for name, _, pw in (u.partition(":") for u in args.sasl_user)}
        try:
            broker = Broker(run_dir, sasl_users=users, ssl_keystore=args.ssl_keystore,
                            ssl_cafile=args.ssl_cafile, ssl_client_auth=args.ssl_client_auth)
        except ValueError as exc:
            parser.error(str(exc))
        bootstrap = broker.start(detach=True)
        state = {"pid": broker.pid, "bootstrap": bootstrap, "dir": str(broker.dir)}
        (run_dir / "state.json").write_text(json.dumps(state) + "\n")
        print(bootstrap)
    elif args.command == "stop":
        if state is None:
            print(f"no Kafka state in {run_dir}", file=sys.stderr)
            return 0
        _stop_state(state)
        (run_dir / "state.json").unlink(missing_ok=True)
        print(f"stopped Kafka (pid {state.get('pid')})")
    else:
        if state is None or not _healthy(state):
            print(f"Kafka is not running (run dir {run_dir})", file=sys.stderr)
            return 1
        print(json.dumps(state))
    return 0


def _stop_state(state: dict[str, object]) -> None:
    pid = state.get("pid")
    if isinstance(pid, int):
        broker = Broker(Path(str(state.get("dir", default_run_dir()))))
        broker._pid = pid
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
