"""Running untrusted Python programs against tests: one fresh, confined process per test.

API::

    verdict = run_tests(code, tests, fn_name=None, limits=Limits(), budget_s=None)
    run = run_program(code, stdin_text, limits=Limits(), fn_name=None)   # one process, no judging
    layers()                                                              # what this machine allows

A test is ``{"input": str, "output": str, "testtype": "stdin" | "functional"}``. A *stdin* test
runs the program as ``__main__`` with the input on standard input and compares what it prints,
line by line (numbers compared as decimals, floats within ``float_tolerance``). A *functional*
test (LeetCode) reads one JSON value per input line, calls ``Solution().<fn_name>(*args)`` (or
a module-level ``fn_name``) and compares the JSON of the return value with the expected JSON.
Both kinds see the official runner's preamble (``from collections import *``, ``math``,
``typing``, ... and ``sys.setrecursionlimit(50000)``). Tests run in order and stop at the first
failure, as in the official runner; the verdict names the first failing test.

How each process is confined, and what meets each threat (the harness runs as root on CI and on
the development machines; without root the uid and mount layers are skipped, see below):

=============================  =================================================================
threat                         met by
=============================  =================================================================
infinite loop / slow code      ``RLIMIT_CPU`` (SIGXCPU, then SIGKILL) and a wall clock kept by the
                               parent, which SIGKILLs the process group when it runs out
sleeping / blocking forever    the parent's wall clock; ``PR_SET_PDEATHSIG`` kills the program
                               if the grading process itself dies first (seccomp keeps it set)
memory hog                     ``RLIMIT_AS`` (address space; MemoryError -> ``memory_limit``)
fork bomb, subprocesses        seccomp: fork, vfork and clone without CLONE_THREAD fail (threads
                               still work: the ``threading`` idiom for deep recursion is common);
                               plus ``RLIMIT_NPROC`` on a uid of its own, and after every run
                               every process of that uid is killed
huge output                    stdout/stderr go to files capped by ``RLIMIT_FSIZE`` (the kernel
                               kills the writer on overflow: ``output_limit``)
writing files                  an empty working directory per run; an unprivileged uid cannot
                               write the harness's files; private size-capped tmpfs on /tmp,
                               /var/tmp, /dev/shm, /run/lock (mount namespace)
environment secrets            a minimal environment (PATH, LANG, HOME, thread counts); another
                               uid cannot read the harness's ``/proc/PID/environ``
network                        a network namespace (only a down loopback: even 127.0.0.1 is
                               unreachable); seccomp also refuses sockets other than AF_UNIX,
                               which is the fallback where namespaces are not allowed
killing / tracing the harness  another uid (kill -> EPERM); seccomp allows kill/tkill/tgkill only
                               on the program itself and refuses ptrace, pidfd, process_vm_*
inherited file descriptors     only stdin/stdout/stderr survive (the child closes all others)
deep recursion                 C-stack overflow is a SIGSEGV of the child only (``runtime_error``)
=============================  =================================================================

Each sandboxed run gets a *slot*: a uid of its own (``UID_BASE + slot``, taken with an flock, so
parallel graders never share a process budget or kill each other's programs). Layers are probed
once per process (:func:`layers`) and then required: a run whose confinement fails to apply is a
``sandbox_error``, never an unconfined run.

Not covered: files readable by everyone stay readable (the program sees the host's file system,
including the repository and any world-readable data; there is no pid namespace, so the process
list and command lines are visible); CPU caches/timing side channels; abstract unix sockets when
no network namespace is available; kernel exploits. Without root: the program runs as the
harness's own user (it can read that user's files and /proc/PID/environ; seccomp still stops
signals, tracing, forks and sockets), no RLIMIT_NPROC, no private /tmp; the network namespace is
tried through an unprivileged user namespace. Seccomp needs x86_64 or aarch64; elsewhere forks
are bounded by RLIMIT_NPROC only (as root).

The interpreter must be readable by the sandbox uid. When the harness's own Python lives in a
private directory (e.g. pyenv under /root), the system's ``pythonX.Y`` of the same version is
used instead (:func:`layers` reports which); set ``Limits.python`` to choose one.
"""

from __future__ import annotations

import ctypes
import errno
import json
import math
import os
import signal
import struct
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal, InvalidOperation
from functools import cache

SLOT_DIR = "/tmp/moi-sandbox-slots"  # root's: a lock file and a working directory per sandbox uid
UID_BASE = 61000 - 64  # sandbox uids: 60936..60999 (below systemd's dynamic range 61184-65519)
SLOTS = 64
PREAMBLE_STAR = (
    "string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math", "random", "statistics",
    "itertools", "functools", "operator", "io", "sys", "json", "builtins", "typing",
)
PREAMBLE_MODULES = PREAMBLE_STAR[:-2]
RECURSION_LIMIT = 50000
TMPFS_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")

# Exit codes of the confined process (a program can only fake them with os._exit: harmless).
EXIT_RUNTIME, EXIT_SYNTAX, EXIT_MEMORY, EXIT_OUTPUT, EXIT_SETUP, EXIT_NO_FUNCTION = 1, 81, 82, 83, 84, 85
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
class Verdict:
    """The outcome of a program over a list of tests (see ``VERDICTS``)."""

    verdict: str
    passed_tests: int
    total_tests: int
    first_failure: int | None = None
    message: str = ""
    wall_s: float = 0.0

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"

    def to_dict(self) -> dict:
        return asdict(self)


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


# ------------------------------------------------------------------------------------------------
# Judging
# ------------------------------------------------------------------------------------------------
def run_tests(
    code: str,
    tests: list[dict],
    fn_name: str | None = None,
    limits: Limits = Limits(),
    budget_s: float | None = None,
    float_tolerance: float = 1e-6,
) -> Verdict:
    """Run ``code`` on each test in order, stopping at the first failure.

    ``budget_s`` bounds the whole call: each test's time limit is cut to what is left, and when
    nothing is left the verdict is ``time_limit`` at the next test.
    """
    if not tests:
        raise ValueError("no tests: a program cannot be judged without them")
    if not fn_name and any(t.get("testtype") == "functional" for t in tests):
        raise ValueError("functional tests need the name of the function to call")
    start = time.monotonic()
    total = len(tests)
    for index, test in enumerate(tests):
        step = limits
        if budget_s is not None:
            left = budget_s - (time.monotonic() - start)
            if left < 0.5:
                return Verdict("time_limit", index, total, index, f"time budget of {budget_s:g} s per sample spent", _since(start))
            if left < limits.time_s + limits.wall_slack_s:
                step = replace(limits, time_s=max(0.1, left - limits.wall_slack_s), wall_slack_s=min(limits.wall_slack_s, left / 2))
        functional = test.get("testtype") == "functional"
        run = run_program(code, test["input"], step, fn_name if functional else None)
        if run.status != "ok":
            verdict = "runtime_error" if run.status == "output_limit" else run.status
            message = run.message
            if verdict == "time_limit" and step is not limits:
                message = f"time budget of {budget_s:g} s per sample spent (this test was cut to {step.time_s:.2g} s)"
            return Verdict(verdict, index, total, index, message, _since(start))
        if functional:
            same, message = compare_values(run.stdout, test["output"], float_tolerance)
        else:
            same, message = compare_stdout(run.stdout, test["output"], float_tolerance)
        if not same:
            return Verdict("wrong_answer", index, total, index, message, _since(start))
    return Verdict("passed", total, total, None, "", _since(start))


def _since(start: float) -> float:
    return round(time.monotonic() - start, 3)


def _short(text: str, size: int = 120) -> str:
    text = str(text)
    return text if len(text) <= size else text[: size // 2] + " ... " + text[-size // 2 :]


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip().split("\n")]


def _decimals(line: str) -> list[Decimal] | None:
    try:
        return [Decimal(token) for token in line.split()]
    except (InvalidOperation, ValueError):
        return None


def _close(got: Decimal, expected: Decimal, tolerance: float, expected_token: str) -> bool:
    if got == expected:
        return True
    is_float = any(c in expected_token for c in ".eE")  # integers must match exactly
    return bool(tolerance) and is_float and got.is_finite() and expected.is_finite() and (
        abs(got - expected) <= Decimal(str(tolerance)) * max(Decimal(1), abs(expected))
    )


def compare_stdout(got: str, expected: str, tolerance: float = 1e-6) -> tuple[bool, str]:
    """The official rule: whitespace-stripped lines must match in number; each line must be equal,
    or equal as decimals token by token; plus floats within ``tolerance`` (absolute below 1,
    relative above; 0 restores the official exact rule). Returns ``(same, message)``."""
    got_lines, expected_lines = _lines(got), _lines(expected)
    if len(got_lines) != len(expected_lines):
        return False, f"{len(got_lines)} output lines, expected {len(expected_lines)}"
    for number, (mine, theirs) in enumerate(zip(got_lines, expected_lines)):
        if mine == theirs:
            continue
        a, b = _decimals(mine), _decimals(theirs)
        tokens = theirs.split()
        if a is None or b is None or len(a) != len(b) or not all(
            _close(x, y, tolerance, t) for x, y, t in zip(a, b, tokens)
        ):
            return False, f"line {number + 1}: got {_short(mine)!r}, expected {_short(theirs)!r}"
    return True, ""


def _parse_int(text: str) -> int | tuple[str, str]:
    """JSON integers; very long ones stay digits, tagged (Python refuses to convert them by default)."""
    return int(text) if len(text) < 4000 else ("int", text)


def _values_equal(got, expected, tolerance: float) -> bool:
    if isinstance(got, float) or isinstance(expected, float):
        if isinstance(got, (int, float)) and isinstance(expected, (int, float)):
            return got == expected or math.isclose(got, expected, rel_tol=tolerance, abs_tol=tolerance)
        return False
    if isinstance(got, list) and isinstance(expected, list):
        return len(got) == len(expected) and all(_values_equal(g, e, tolerance) for g, e in zip(got, expected))
    if isinstance(got, dict) and isinstance(expected, dict):
        return got.keys() == expected.keys() and all(_values_equal(got[k], expected[k], tolerance) for k in got)
    return got == expected


def compare_values(got_json: str, expected_json: str, tolerance: float = 1e-6) -> tuple[bool, str]:
    """A functional test: the program's return value (as the sandbox serialised it) against the
    expected JSON. Tuples count as lists; floats match within ``tolerance``."""
    try:
        reply = json.loads(got_json, parse_int=_parse_int)
    except ValueError:
        return False, "no return value"
    if "unserializable" in reply:
        return False, f"return value of type {reply['unserializable']} is not JSON"
    expected = json.loads(expected_json, parse_int=_parse_int)
    if _values_equal(reply.get("value"), expected, tolerance):
        return True, ""
    return False, f"returned {_short(json.dumps(reply.get('value')))}, expected {_short(expected_json)}"


# ------------------------------------------------------------------------------------------------
# Running one program (parent side)
# ------------------------------------------------------------------------------------------------
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
            python, [python, "-I", "-S", "-B", os.path.abspath(__file__)], env, file_actions=actions,
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


def _last_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return _short(lines[-1], 200) if lines else ""


def _classify(code: int, exited: bool, cpu_s: float, stderr: str, limits: Limits) -> tuple[str, str]:
    """A process's end as a status and a short message."""
    if not exited:
        return "time_limit", f"wall clock limit of {limits.time_s + limits.wall_slack_s:g} s"
    if code == 0:
        return "ok", ""
    if code in (-signal.SIGXCPU, -signal.SIGKILL) and cpu_s >= math.ceil(limits.time_s) - 0.05:
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
    found = Layers(interpreter, site, setuid=root, netns=True, mountns=root, seccomp=_arch() is not None)
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


# ------------------------------------------------------------------------------------------------
# seccomp: a small BPF filter (only syscall numbers and the first argument are inspected)
# ------------------------------------------------------------------------------------------------
_SYSCALLS = {  # name: (x86_64, aarch64); None where the architecture has no such call
    "fork": (57, None), "vfork": (58, None), "clone": (56, 220), "clone3": (435, 435),
    "socket": (41, 198), "kill": (62, 129), "tkill": (200, 130), "tgkill": (234, 131),
    "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271),
    "pidfd_open": (434, 434), "pidfd_send_signal": (424, 424), "pidfd_getfd": (438, 438),
    "io_uring_setup": (425, 425), "unshare": (272, 97), "setns": (308, 268), "mount": (165, 40),
    "bpf": (321, 280), "perf_event_open": (298, 241), "userfaultfd": (323, 282), "keyctl": (250, 219),
    "prctl": (157, 167),
}
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_CLONE_THREAD, _AF_UNIX, _PR_SET_PDEATHSIG = 0x00010000, 1, 1
_LD, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ/JGE/JSET|K, BPF_RET|K
_ALLOW, _KILL = 0x7FFF0000, 0x80000000


def _arch() -> str | None:
    import platform

    machine = platform.machine()
    return machine if machine in _AUDIT_ARCH else None


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def _errno(number: int) -> int:
    return 0x00050000 | number  # SECCOMP_RET_ERRNO


def seccomp_filter(arch: str, pid: int) -> bytes:
    """The filter: no new processes (threads allowed), no sockets but AF_UNIX, signals only to
    ``pid`` itself, the death signal stays, no tracing, io_uring, namespaces, mounts, bpf, perf,
    userfaultfd or keyrings."""
    column = 0 if arch == "x86_64" else 1
    nr = {name: numbers[column] for name, numbers in _SYSCALLS.items() if numbers[column] is not None}
    arg0 = _insn(_LD, 16)  # low 32 bits of the first argument (little-endian)
    deny = _insn(_RET, _errno(errno.EPERM))
    rules = {  # syscall: instructions run when it matches (each block ends in a return)
        "clone": [arg0, _insn(_JSET, _CLONE_THREAD, 0, 1), _insn(_RET, _ALLOW), deny],
        "clone3": [_insn(_RET, _errno(errno.ENOSYS))],  # flags are behind a pointer: make libc use clone
        "socket": [arg0, _insn(_JEQ, _AF_UNIX, 0, 1), _insn(_RET, _ALLOW), _insn(_RET, _errno(errno.EACCES))],
        "prctl": [arg0, _insn(_JEQ, _PR_SET_PDEATHSIG, 0, 1), deny, _insn(_RET, _ALLOW)],  # keep the death signal
    }
    for name in ("kill", "tkill", "tgkill"):
        rules[name] = [arg0, _insn(_JEQ, pid, 1, 0), _insn(_JEQ, 0, 0, 1), _insn(_RET, _ALLOW), deny]
    for name in nr:
        rules.setdefault(name, [deny])
    program = [_insn(_LD, 4), _insn(_JEQ, _AUDIT_ARCH[arch], 1, 0), _insn(_RET, _KILL), _insn(_LD, 0)]
    if arch == "x86_64":
        program += [_insn(_JGE, 0x40000000, 0, 1), deny]  # the x32 ABI
    for name, block in rules.items():
        program.append(_insn(_JEQ, nr[name], 0, len(block)))  # no match: skip the block
        program += block
    program.append(_insn(_RET, _ALLOW))
    return b"".join(program)


# ------------------------------------------------------------------------------------------------
# The confined process (runs this file as a script: ``python -I -S -B sandbox.py``)
# ------------------------------------------------------------------------------------------------
def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return libc


def _check(result: int, layer: str, what: str) -> None:
    if result != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"layer {layer}: {what}: {os.strerror(number)}")


def _confine(job: dict) -> None:
    """Apply every layer the job asks for, in order; raise OSError naming a layer that fails."""
    import resource

    libc, limits, uid = _libc(), job["limits"], job["uid"]
    if job["netns"]:
        flags = 0x40000000 | (0x20000 if job["mountns"] else 0)  # CLONE_NEWNET | CLONE_NEWNS
        if os.geteuid() != 0:
            flags |= 0x10000000  # CLONE_NEWUSER: a network namespace without root
        _check(libc.unshare(flags), "netns", "unshare")
    elif job["mountns"]:
        _check(libc.unshare(0x20000), "mountns", "unshare")
    if job["mountns"]:
        _check(libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None), "mountns", "make / private")  # MS_REC|MS_PRIVATE
        for folder in TMPFS_DIRS:
            if os.path.isdir(folder):
                options = f"size={limits['tmpfs_mb']}m,mode=1777,nr_inodes=4096".encode()
                _check(libc.mount(b"tmpfs", folder.encode(), b"tmpfs", 0x2 | 0x4, options), "mountns", f"tmpfs {folder}")
    os.makedirs(job["workdir"], mode=0o700, exist_ok=True)  # in the private /tmp, if there is one
    if uid is not None:
        os.chown(job["workdir"], uid, uid)
    os.chdir(job["workdir"])
    mib = 1 << 20
    for name, value in (
        ("RLIMIT_AS", limits["memory_mb"] * mib), ("RLIMIT_FSIZE", limits["output_mb"] * mib),
        ("RLIMIT_NOFILE", limits["open_files"]), ("RLIMIT_CORE", 0),
    ):
        resource.setrlimit(getattr(resource, name), (value, value))
    if uid is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["max_tasks"], limits["max_tasks"]))
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        except OSError as err:
            raise OSError(err.errno, f"layer setuid: {err.strerror}") from None
    _check(libc.prctl(1, signal.SIGKILL, 0, 0, 0), "pdeathsig", "PR_SET_PDEATHSIG")  # after setuid, which clears it
    if os.getppid() != job["parent"]:
        os._exit(EXIT_SETUP)  # the grader died before the death signal was armed
    if job["seccomp"]:
        _check(libc.prctl(38, 1, 0, 0, 0), "seccomp", "PR_SET_NO_NEW_PRIVS")
        code = seccomp_filter(_arch() or "", os.getpid())
        buffer = ctypes.create_string_buffer(code, len(code))

        class Program(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

        program = Program(len(code) // 8, ctypes.addressof(buffer))
        result = libc.prctl(22, 2, ctypes.addressof(program), 0, 0)  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        _check(result, "seccomp", "PR_SET_SECCOMP")


def _preamble(name: str) -> dict:
    """The globals a program starts with: the official runner's imports."""
    import importlib

    namespace: dict = {"__name__": name, "__builtins__": __builtins__}
    for module in PREAMBLE_STAR:
        exec(f"from {module} import *", namespace)
    for module in PREAMBLE_MODULES:
        namespace[module] = importlib.import_module(module)
    sys.setrecursionlimit(RECURSION_LIMIT)
    return namespace


def _jsonable(value):
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(type(value).__name__)


def _join_threads() -> None:
    """Wait for the program's non-daemon threads, as interpreter shutdown would."""
    import threading

    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()


def _child_main() -> None:
    import resource
    import traceback

    with os.fdopen(3, "rb") as handle:
        job = json.loads(handle.read())
    os.closerange(3, 1 << 20)  # nothing inherited from the grader beyond stdin, stdout, stderr
    try:
        _confine(job)
    except OSError as err:
        sys.stderr.write(f"sandbox setup failed: {err.strerror or err}\n")
        sys.stderr.flush()
        os._exit(EXIT_SETUP)
    sys.path.extend(job["site_packages"])
    sys.set_int_max_str_digits(50000)
    functional = job["fn_name"] is not None
    args = [json.loads(line) for line in sys.stdin.read().split("\n") if line.strip()] if functional else []
    namespace = _preamble("solution" if functional else "__main__")
    reply_fd = os.dup(1) if functional else 1
    if functional:
        os.dup2(2, 1)  # the program's prints go to stderr; only the reply goes to stdout
    try:
        program = compile(job["code"], "solution.py", "exec")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as err:
        sys.stderr.write(f"{type(err).__name__}: {err}\n")
        sys.stderr.flush()
        os._exit(EXIT_SYNTAX)
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it; the kernel should kill on overflow
    seconds = math.ceil(job["limits"]["time_s"])
    resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))
    result = None
    try:
        exec(program, namespace)
        if functional:
            target = namespace["Solution"]() if "Solution" in namespace else None
            method = getattr(target, job["fn_name"], None) if target is not None else namespace.get(job["fn_name"])
            if not callable(method):
                sys.stderr.write(f"no function {job['fn_name']!r} in the solution\n")
                sys.stderr.flush()
                os._exit(EXIT_NO_FUNCTION)
            result = method(*args)
        elif "threading" in sys.modules:
            _join_threads()
        sys.stdout.flush()
    except SystemExit:
        if functional:
            traceback.print_exc()
            os._exit(EXIT_RUNTIME)
        if "threading" in sys.modules:
            _join_threads()
    except MemoryError:
        os._exit(EXIT_MEMORY)
    except OSError as err:
        os._exit(EXIT_OUTPUT if err.errno == errno.EFBIG else _traceback_exit())
    except BaseException:
        os._exit(_traceback_exit())
    try:
        if functional:
            try:
                reply = json.dumps({"value": result}, default=_jsonable)
            except (TypeError, ValueError) as err:
                reply = json.dumps({"unserializable": str(err) or type(result).__name__})
            os.write(reply_fd, reply.encode())
        else:
            sys.stdout.flush()
    except OSError as err:
        os._exit(EXIT_OUTPUT if err.errno == errno.EFBIG else EXIT_RUNTIME)
    os._exit(0)


def _traceback_exit() -> int:
    import traceback

    try:
        traceback.print_exc()
        sys.stderr.flush()
    except BaseException:
        pass
    return EXIT_RUNTIME


if __name__ == "__main__":
    _child_main()
