"""What the control plane's modules share: its error, free loopback ports, log tails, pid files."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path


class ControlPlaneError(RuntimeError):
    pass


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 256 * 1024))
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot, or None when it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]


def write_pidfile(path: Path, pid: int) -> None:
    """Record pid with its start time, so a recycled pid is never mistaken for ours."""
    Path(path).write_text(f"{pid} {start_time(pid)}\n")


def stop_pidfile(path: Path, timeout: float = 20.0) -> None:
    """SIGTERM the process a pid file names (if it is still that process), SIGKILL after timeout."""
    try:
        pid_s, started = Path(path).read_text().split()[:2]
        pid = int(pid_s)
    except (FileNotFoundError, ValueError):
        Path(path).unlink(missing_ok=True)
        return
    if start_time(pid) == started:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while start_time(pid) == started and time.monotonic() < deadline:
            try:  # reap it if it is our child
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.05)  # polling a process's exit
        if start_time(pid) == started:
            os.kill(pid, signal.SIGKILL)
    Path(path).unlink(missing_ok=True)


def stop_process(pidfile: Path, proc: subprocess.Popen | None, timeout: float = 20.0) -> None:
    """Stop a component: our own child (``proc``: terminate, kill after ``timeout``, reap), else the process
    its pid file names (a detached one, started by an earlier command)."""
    if proc is None:
        stop_pidfile(pidfile, timeout)
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    Path(pidfile).unlink(missing_ok=True)


def die_with_parent() -> None:  # runs in the child between fork and exec
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def pinned_version(wrapper: Path, module: str) -> str:
    """The version (without its v) a wrapper module's go.mod pins ``module`` at, e.g. 3.7.18."""
    found = re.search(rf"^\s+{re.escape(module)} v(\S+)", (wrapper / "go.mod").read_text(), re.M)
    if not found:
        raise RuntimeError(f"{module} is not pinned in {wrapper / 'go.mod'}")
    return found.group(1)


def module_dir(wrapper: Path, module: str) -> Path:
    """Where ``module``, at the version the wrapper module pins, is in Go's module cache (downloaded from the
    module proxy if missing): third-party manifests and charts are read from there, never copied."""
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly"}
    proc = subprocess.run(["go", "mod", "download", "-json", module], cwd=wrapper, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"go mod download {module} failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return Path(json.loads(proc.stdout)["Dir"])
