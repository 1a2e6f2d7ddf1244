"""Run the appliance (`python -m appliance`, or a frozen binary) as a child process and
follow its startup log."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import trio

STARTUP_DEADLINE_S = 15.0
LISTENING = re.compile(r"FlowFabric \S+ listening on (http://(\S+):(\d+))")
FAST_SCANNERS = {
    "FF_LEASE_EXPIRY_INTERVAL_MS": "100",
    "FF_DELAYED_PROMOTER_INTERVAL_MS": "100",
    "FF_ATTEMPT_TIMEOUT_INTERVAL_S": "1",
    "FF_EXECUTION_DEADLINE_INTERVAL_S": "1",
}


class ApplianceProcess:
    """One appliance child; its stderr is collected line by line on a thread."""

    def __init__(self, cwd: Path, args: Sequence[str] = ("serve", "--listen", "127.0.0.1:0"),
                 env: Mapping[str, str] | None = None,
                 command: Sequence[str] = (sys.executable, "-m", "appliance")) -> None:
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("FF_")}
        child_env.update(env or {})
        child_env["PYTHONUNBUFFERED"] = "1"
        self.cwd = Path(cwd)
        self.proc = subprocess.Popen([*command, *args], cwd=cwd,
                                     env=child_env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.url: str | None = None
        self.port: int | None = None
        self._listening = threading.Event()
        self._new_line = threading.Condition()
        self._reader = threading.Thread(target=self._follow_stderr, daemon=True)
        self._reader.start()

    def _follow_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._new_line:
                self.lines.append(line.rstrip("\n"))
                self._new_line.notify_all()
            match = LISTENING.search(line)
            if match and self.url is None:
                self.url, self.port = match.group(1), int(match.group(3))
                self._listening.set()
        self._listening.set()

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_listening(self, timeout: float = STARTUP_DEADLINE_S) -> str:
        """Block until the startup log names the address; fail with the log otherwise."""
        self._listening.wait(timeout)
        if self.url is None:
            self.kill()
            raise AssertionError(f"appliance did not report 'listening on' within {timeout}s "
                                 f"(exit code {self.proc.poll()}); its log:\n{self.log}")
        return self.url

    def wait_for_log(self, text: str, timeout: float = 10.0) -> None:
        """Block until a log line contains ``text``."""
        with self._new_line:
            if not self._new_line.wait_for(lambda: any(text in x for x in self.lines), timeout):
                raise AssertionError(f"no log line with {text!r} within {timeout}s; its log:\n"
                                     f"{self.log}")

    async def wait_for_log_async(self, text: str, timeout: float = 10.0) -> None:
        await trio.to_thread.run_sync(self.wait_for_log, text, timeout)

    def wait_exit(self, timeout: float = STARTUP_DEADLINE_S) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"appliance still running after {timeout}s; its log:\n"
                                 f"{self.log}") from None
        self._drain_pipes()
        return code

    async def wait_exit_async(self, timeout: float = STARTUP_DEADLINE_S) -> int:
        return await trio.to_thread.run_sync(self.wait_exit, timeout)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then wait for the drain; returns the exit code."""
        self.signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._drain_pipes()

    def _drain_pipes(self) -> None:
        """Let the reader threads see EOF so ``lines`` holds the whole log."""
        self._reader.join(5)


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
