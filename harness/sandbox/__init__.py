"""The code sandbox: untrusted Python programs run against tests, one fresh confined process per test.

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

from harness.sandbox.judge import Verdict, compare_stdout, compare_values, run_tests
from harness.sandbox.process import SLOTS, UID_BASE, Layers, Limits, Run, SandboxError, layers, run_program

__all__ = [
    "SLOTS", "UID_BASE", "Layers", "Limits", "Run", "SandboxError", "Verdict", "compare_stdout", "compare_values",
    "layers", "run_program", "run_tests",
]
