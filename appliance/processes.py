"""``--processes N``: N appliance processes serving one port, to use more than one core.

The parent binds the port (a taken port fails once, clearly) and runs N children of
the same executable that inherit the listening socket; the kernel hands each new
connection to one of them. The children share the store as separate appliances do:
scanners re-check what they find, and work notifications cross processes. SIGTERM or
SIGINT to the parent drains every child (a second one forces them); a child killed by a
signal (SIGKILL, the OOM killer) is started again, so its leases expire and are
reclaimed like any crashed appliance's; a child that exits with an error soon after it
started (a store it cannot reach, a bad setting) stops them all. Children run in their
own process group (a terminal's ^C reaches the parent, which passes it on once) and
drain when the parent is gone, even SIGKILLed.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence

import trio

from appliance.config import Config
from appliance.core.errors import StartupError
from appliance.exit_codes import EXIT_FORCED
from appliance.http.server import bind

log = logging.getLogger("flowfabric.processes")

#: How the parent hands the listening socket to a child (not an FF_ setting: users
#: never set it).
LISTEN_FD = "FLOWFABRIC_LISTEN_FD"
#: A child that fails within this time of starting failed to start: no restart.
STARTUP_S = 10.0
RESTART_DELAY_S = 1.0
#: The parent's pid: a child drains when its parent is gone (even SIGKILLed).
PARENT = "FLOWFABRIC_PARENT_PID"
PARENT_CHECK_S = 1.0


def is_child() -> bool:
    return LISTEN_FD in os.environ


def inherited_socket() -> socket.socket | None:
    """The listening socket a parent passed down, if this process is a child."""
    fd = os.environ.pop(LISTEN_FD, None)
    return socket.socket(fileno=int(fd)) if fd else None


async def watch_parent(stop: Callable[[], None]) -> None:
    """In a child: drain once the parent is gone (even SIGKILLed), checked every
    ``PARENT_CHECK_S``. (PR_SET_PDEATHSIG would follow the thread that started the
    child, which Trio's thread cache retires.)"""
    parent = int(os.environ.get(PARENT) or 0)
    if not parent:
        return
    while os.getppid() == parent:
        await trio.sleep(PARENT_CHECK_S)
    log.warning("the parent process %d is gone: draining", parent)
    stop()


def check_shared(config: Config, backend_shared: bool) -> None:
    if config.processes > 1 and not backend_shared:
        raise StartupError(
            f"FF_PROCESSES={config.processes}: the {config.backend} backend serves from one "
            f"process (it locks its store); use --processes 1, or a store several processes "
            f"share (FF_BACKEND=valkey or postgres)")


def child_command(argv: Sequence[str]) -> list[str]:
    """This executable with ``argv``, as one child (the last flag and ``--set`` win)."""
    head = [sys.executable] if getattr(sys, "frozen", False) else [
        sys.executable, "-m", "appliance"]
    return [*head, *argv, "--processes", "1", "--set", "FF_PROCESSES=1"]


async def run(config: Config, argv: Sequence[str]) -> int:
    """Run ``config.processes`` children until they drain; the worst exit code."""
    sock = bind(config.listen_host, config.listen_port)
    children = _Children(child_command(argv), sock)
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(children.forward, signals)
                async with trio.open_nursery() as each:
                    for index in range(config.processes):
                        each.start_soon(children.keep_running, index)
                nursery.cancel_scope.cancel()
    finally:
        sock.close()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)  # as the single process does at exit
    return max(children.codes, default=0)


class _Children:
    def __init__(self, command: list[str], sock: socket.socket) -> None:
        self.command = command
        self.sock = sock
        self.env = {**os.environ, LISTEN_FD: str(sock.fileno()), PARENT: str(os.getpid())}
        self.running: dict[int, trio.Process] = {}
        self.stopping = False
        self.signals = 0  # forwarded to the children so far
        #: Each child's last exit code (killed by another signal N: 128 + N, as shells say).
        self.codes: list[int] = []

    async def keep_running(self, index: int) -> None:
        while not self.stopping:
            started = trio.current_time()
            proc = await trio.lowlevel.open_process(
                self.command, env=self.env, pass_fds=(self.sock.fileno(),),
                stdin=subprocess.DEVNULL, process_group=0)  # a terminal's ^C: the parent's
            self.running[index] = proc
            code = await proc.wait()
            if self.stopping:
                # Killed by the one signal it was sent, or forced by it: it was still
                # starting (or already closing), with nothing to drain.
                early = code in (-signal.SIGTERM, -signal.SIGINT) or (
                    code == EXIT_FORCED and self.signals == 1)
                self.codes.append(0 if early else 128 - code if code < 0 else code)
                return
            if code >= 0 and trio.current_time() - started < STARTUP_S:
                log.error("process %d exited with code %d while starting; stopping the others",
                          index, code)
                self.codes.append(code or 1)
                self.stop(signal.SIGTERM)
                return
            log.warning("process %d (pid %d) ended (%s); starting it again", index, proc.pid,
                        f"signal {-code}" if code < 0 else f"exit code {code}")
            await trio.sleep(RESTART_DELAY_S)

    def stop(self, signum: int) -> None:
        """Drain every child (a second signal forces them, as it does one appliance)."""
        self.stopping = True
        self.signals += 1
        for proc in self.running.values():
            if proc.returncode is None:
                proc.send_signal(signum)

    async def forward(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            self.stop(signum)
