"""The confined process: ``python -I -S -B child.py`` runs one program under every layer it is given.

Run as a script, outside the harness (no site-packages, no current directory on the path), so it
imports nothing but the standard library. The parent (:mod:`harness.sandbox.process`) hands it
the job on file descriptor 3 and its input on stdin; the exit codes below tell the parent why it
stopped.
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

PREAMBLE_STAR = (
    "string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math", "random", "statistics",
    "itertools", "functools", "operator", "io", "sys", "json", "builtins", "typing",
)
PREAMBLE_MODULES = PREAMBLE_STAR[:-2]
RECURSION_LIMIT = 50000
TMPFS_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")

# Exit codes of the confined process (a program can only fake them with os._exit: harmless).
EXIT_RUNTIME, EXIT_SYNTAX, EXIT_MEMORY, EXIT_OUTPUT, EXIT_SETUP, EXIT_NO_FUNCTION = 1, 81, 82, 83, 84, 85


# seccomp: a small BPF filter (only syscall numbers and the first argument are inspected)
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


def arch() -> str | None:
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
        code = seccomp_filter(arch() or "", os.getpid())
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
