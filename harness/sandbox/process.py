"""Running one untrusted program in a fresh confined process (the parent side).

Each run takes a *slot* (a uid of its own when the harness runs as root), writes the job for
:mod:`harness.sandbox.child`, spawns it with a wall clock, and classifies how it ended. Which
layers this machine allows is probed once per process (:func:`layers`).
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from functools import cache

from harness.sandbox import child
from harness.sandbox.child import EXIT_MEMORY, EXIT_OUTPUT, EXIT_SETUP, EXIT_SYNTAX

SLOT_DIR = "/tmp/moi-sandbox-slots"  # root's: a lock file and a working directory per sandbox uid
UID_BASE = 61000 - 64  # sandbox uids: 60936..60999 (below systemd's dynamic range 61184-65519)
SLOTS = 64
STATUSES = ("ok", "time_limit", "memory_limit", "runtime_error", "syntax_error", "output_limit", "sandbox_error")
VERDICTS = ("passed", "wrong_answer", "time_limit", "memory_limit", "runtime_error", "syntax_error", "sandbox_error")




class SandboxError(RuntimeError):
    """The sandbox itself cannot run here (not a verdict about a program)."""


@dataclass(frozen=True)
class Limits:
    """Per-test limits. ``time_s`` is CPU time; the wall clock allows ``time_s + wall_slack_s``."""

    time_s: float = 6.0
    wall_slack_s: float = 1.0
    memory_mb: int = 4096  # address space, not resident memory
    output_mb: int = 64  # stdout, stderr, and any single file the program writes
    tmpfs_mb: int = 64  # each private /tmp-like mount
    max_tasks: int = 16  # threads + processes of the sandbox uid (root only)
    open_files: int = 64
    python: str | None = None  # interpreter for programs; None: the harness's, if the sandbox uid can read it


@dataclass(frozen=True)
class Run:
    """One program run: its status (see ``STATUSES``) and what it printed."""

    status: str
    stdout: str = ""
    stderr: str = ""  # the tail
    exit_code: int | None = None  # negative: killed by that signal
    cpu_s: float = 0.0
    wall_s: float = 0.0
    message: str = ""


@dataclass(frozen=True)
class Layers:
    """The confinement this machine allows, as found by :func:`layers`."""

    python: str
    site_packages: tuple[str, ...] = ()
    setuid: bool = False
    netns: bool = False
    mountns: bool = False
    seccomp: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)


def run_program(code: str, stdin: str, limits: Limits = Limits(), fn_name: str | None = None) -> Run:
    """Run ``code`` once in a confined process, as a script reading ``stdin``; or, given
    ``fn_name``, call that function with the JSON arguments on ``stdin`` (``stdout`` is then
    ``{"value": ...}``, the program's own prints go to ``stderr``)."""
    return _run(code, stdin, limits, fn_name, layers(limits.python))


def _run(code: str, stdin: str, limits: Limits, fn_name: str | None, found: Layers) -> Run:
    import shutil
    import tempfile

    with _slot(found.setuid) as uid:
        if uid is None:
            workdir = tempfile.mkdtemp(prefix="moi-sandbox-")
        else:  # the slot's own folder, emptied: whatever a killed grader left there goes now
            workdir = os.path.join(SLOT_DIR, f"work-{uid}")
            shutil.rmtree(workdir, ignore_errors=True)
            os.mkdir(workdir, 0o700)
            os.chown(workdir, uid, uid)
        try:
            job = {
                "code": code, "fn_name": fn_name, "uid": uid, "workdir": workdir,
                "parent": os.getpid(), "limits": asdict(limits), "site_packages": list(found.site_packages),
                "netns": found.netns, "mountns": found.mountns, "seccomp": found.seccomp,
            }
            return _spawn(job, stdin.encode("utf-8", "surrogateescape"), limits, found.python, uid)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            if uid is not None:
                _kill_uid(uid)


def _spawn(job: dict, stdin: bytes, limits: Limits, python: str, uid: int | None) -> Run:
    import select
    import tempfile

    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": job["workdir"], "TMPDIR": job["workdir"],
        "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    }
    with ExitStack() as stack:
        files = [stack.enter_context(tempfile.TemporaryFile()) for _ in range(4)]  # stdin, stdout, stderr, job
        files[0].write(stdin)
        files[3].write(json.dumps(job).encode())
        for handle in (files[0], files[3]):
            handle.flush()
            handle.seek(0)
        actions = [(os.POSIX_SPAWN_DUP2, handle.fileno(), fd) for fd, handle in enumerate(files)]
        started = time.monotonic()
        pid = os.posix_spawn(
            python, [python, "-I", "-S", "-B", os.path.abspath(child.__file__)], env, file_actions=actions,
            setsid=True, setsigdef=(signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGXCPU, signal.SIGXFSZ),
        )
        wall = limits.time_s + limits.wall_slack_s
        try:
            pidfd = os.pidfd_open(pid)
            try:
                exited = bool(select.select([pidfd], [], [], wall)[0])
            finally:
                os.close(pidfd)
        except OSError:  # no pidfd: poll
            exited = _poll_exit(pid, started + wall)
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # whatever is left in its group (the pid is not reaped yet)
        _, status, usage = os.wait4(pid, 0)
        wall_s = time.monotonic() - started
        files[1].seek(0)
        stdout = files[1].read(limits.output_mb << 20).decode("utf-8", "replace")
        size = files[2].seek(0, os.SEEK_END)
        files[2].seek(max(0, size - 2000))
        stderr = files[2].read().decode("utf-8", "replace")
    code = os.waitstatus_to_exitcode(status)
    cpu_s = usage.ru_utime + usage.ru_stime
    status_name, message = _classify(code, exited, cpu_s, stderr, limits)
    return Run(status_name, stdout, stderr, code, round(cpu_s, 3), round(wall_s, 3), message)


def _poll_exit(pid: int, deadline: float) -> bool:
    """Wait (without reaping) until ``pid`` exits or the deadline passes; True if it exited."""
    delay = 0.001
    while time.monotonic() < deadline:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:
            return True
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
    return False


def shorten(text: str, size: int = 120) -> str:
    """``text`` cut to about ``size`` characters (its head and tail)."""
    text = str(text)
    return text if len(text) <= size else text[: size // 2] + " ... " + text[-size // 2 :]


def _last_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return shorten(lines[-1], 200) if lines else ""


def _classify(code: int, exited: bool, cpu_s: float, stderr: str, limits: Limits) -> tuple[str, str]:
    """A process's end as a status and a short message."""
    if not exited:
        return "time_limit", f"wall clock limit of {limits.time_s + limits.wall_slack_s:g} s"
    if code == 0:
        return "ok", ""
    # SIGXCPU comes from RLIMIT_CPU alone (rusage may report a little less CPU time than the kernel
    # counted when the machine is busy); SIGKILL at RLIMIT_CPU's hard limit, or from elsewhere.
    if code == -signal.SIGXCPU or (code == -signal.SIGKILL and cpu_s >= math.ceil(limits.time_s) - 0.05):
        return "time_limit", f"CPU time limit of {math.ceil(limits.time_s)} s"
    if code == -signal.SIGXFSZ or code == EXIT_OUTPUT:
        return "output_limit", f"output larger than {limits.output_mb} MiB"
    if code == EXIT_SYNTAX:
        return "syntax_error", _last_line(stderr)
    if code == EXIT_MEMORY:
        return "memory_limit", f"MemoryError (address space limit {limits.memory_mb} MiB)"
    if code == EXIT_SETUP:
        return "sandbox_error", _last_line(stderr)
    if code < 0:
        return "runtime_error", f"killed by {signal.Signals(-code).name}"
    return "runtime_error", _last_line(stderr) or f"exit code {code}"


@contextmanager
def _slot(use_uid: bool) -> Iterator[int | None]:
    """A sandbox uid held for one run (an flock on a root-only file), or None without root."""
    if not use_uid:
        yield None
        return
    import fcntl
    import stat

    os.makedirs(SLOT_DIR, exist_ok=True)
    info = os.lstat(SLOT_DIR)  # not a planted symlink, and root's
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0:
        raise SandboxError(f"{SLOT_DIR} must be a directory owned by root")
    os.chmod(SLOT_DIR, 0o711)  # sandbox uids may pass through to their folder, nothing more
    first = os.getpid() % SLOTS
    while True:
        for step in range(SLOTS):
            slot = (first + step) % SLOTS
            fd = os.open(os.path.join(SLOT_DIR, str(slot)), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                _kill_uid(UID_BASE + slot)  # anything left by a grader that was killed mid-run
                yield UID_BASE + slot
            finally:
                os.close(fd)  # releases the lock
            return
        time.sleep(0.01)


def _kill_uid(uid: int, wait_s: float = 2.0) -> None:
    """SIGKILL every process whose real or effective uid is ``uid``, and wait (up to ``wait_s``)
    until they are gone: dead ones still count against RLIMIT_NPROC until init reaps them."""
    deadline = time.monotonic() + wait_s
    while True:
        alive = False
        for pid, state in _processes_of(uid):
            alive = True
            if state != b"Z":
                with suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        if not alive or time.monotonic() > deadline:
            return
        time.sleep(0.005)


def _processes_of(uid: int) -> Iterator[tuple[int, bytes]]:
    """``(pid, state letter)`` of the processes whose real or effective uid is ``uid``."""
    wanted = str(uid).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", "rb") as handle:
                fields = dict(line.split(b":", 1) for line in handle if line[:4] in (b"Stat", b"Uid:"))
        except (OSError, ValueError):
            continue
        if wanted in fields.get(b"Uid", b"").split()[:2]:
            yield int(entry), fields.get(b"State", b"?").strip()[:1]


# ------------------------------------------------------------------------------------------------
# What this machine allows
# ------------------------------------------------------------------------------------------------
def _readable_by_others(path: str) -> bool:
    """Every directory above ``path`` is searchable by others and ``path`` itself readable."""
    path = os.path.realpath(path)
    if not os.path.exists(path):
        return False
    parts = path.split(os.sep)
    for depth in range(2, len(parts)):
        if not os.stat(os.sep.join(parts[:depth]) or os.sep).st_mode & 0o001:
            return False
    return bool(os.stat(path).st_mode & 0o004)


def _interpreter(requested: str | None, need_others: bool) -> tuple[str, tuple[str, ...]]:
    """The interpreter for programs and the site-packages folders to give them."""
    import sysconfig

    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = tuple(
        p for p in dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
        if not need_others or _readable_by_others(p)
    )
    if requested:
        return requested, site
    own_stdlib = sysconfig.get_paths()["stdlib"]
    if not need_others or (_readable_by_others(sys.executable) and _readable_by_others(own_stdlib)):
        return sys.executable, site
    for candidate in (f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        stdlib = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(candidate))), "lib", version)
        if _readable_by_others(candidate) and _readable_by_others(stdlib):
            return candidate, site
    raise SandboxError(
        f"the sandbox user cannot read this Python ({sys.executable}, stdlib {own_stdlib}) and no system "
        f"{version} was found; install one, make this one readable by others, or set the sandbox's python"
    )


@cache
def layers(python: str | None = None) -> Layers:
    """Find, once per process, which confinement layers work here, by running a probe program
    with all of them and dropping any that fails to apply (each failure is noted)."""
    root = os.geteuid() == 0
    interpreter, site = _interpreter(python, need_others=root)
    found = Layers(interpreter, site, setuid=root, netns=True, mountns=root, seccomp=child.arch() is not None)
    notes = []
    for _ in range(5):
        run = _run("print(6 * 7)", "", Limits(time_s=5, wall_slack_s=10), None, found)
        if run.status == "ok" and run.stdout.strip() == "42":
            return replace(found, notes=tuple(notes))
        failed = next((name for name in ("setuid", "netns", "mountns", "seccomp") if f"layer {name}:" in run.stderr), None)
        if failed is None or failed == "setuid":
            raise SandboxError(f"the sandbox cannot run a program here: {run.status} {run.message} {run.stderr[-500:]}")
        notes.append(_last_line(run.stderr))
        found = replace(found, **{failed: False})
    raise SandboxError("the sandbox probe did not settle")
