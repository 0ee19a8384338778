"""The grader worker process: answers symbolic-equivalence requests (math-verify/sympy) over a pipe.

Started by `grader_pool` as a fresh interpreter (`python -c` importing only this module), it loops
on (gold, pred) requests and replies ("ok", equal, reason) or ("error", reason). It has no timeout of its own:
math-verify's signal timeouts are off, and the parent's SIGKILL is the limit. It caps its address
space, ignores Ctrl-C (the parent owns shutdown) and asks the kernel to kill it if the parent dies.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from multiprocessing.connection import Connection


def symbolic_check(gold: str, pred: str) -> tuple[bool, str]:
    """math-verify equivalence and why, with its own (signal) timeouts off: the parent's kill is the timeout."""
    from math_verify import parse, verify

    gold_parsed = parse(f"${gold}$", parsing_timeout=None)
    if not gold_parsed:
        return False, "reference answer did not parse"
    pred_parsed = parse(f"${pred}$", parsing_timeout=None)
    if not pred_parsed:
        return False, "answer did not parse"
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None)), "symbolic equivalence"


def _limit_memory(headroom_mb: int) -> None:
    """Cap address space at the current size plus headroom, so a runaway bignum fails, not OOMs."""
    try:
        import resource

        with open("/proc/self/status") as fh:
            vm_kb = next(int(line.split()[1]) for line in fh if line.startswith("VmSize:"))
        cap = vm_kb * 1024 + headroom_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    except (ImportError, OSError, StopIteration, ValueError):
        pass  # not Linux: the wall-clock limit still bounds the worker


def _die_with_parent() -> None:
    try:
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the worker still exits when the request pipe closes


def serve(requests: Connection, replies: Connection, memory_mb: int) -> None:
    """Answer (gold, pred) requests until told to stop (None) or the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    if memory_mb > 0:
        _limit_memory(memory_mb)
    symbolic_check("x+1", "1+x")  # pay imports and sympy warm-up before reporting ready
    replies.send(("ready", os.getpid()))
    while True:
        try:
            request = requests.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        try:
            replies.send(("ok", *symbolic_check(*request)))
        except MemoryError:
            replies.send(("error", f"MemoryError (over {memory_mb} MB)"))
        except RecursionError:
            replies.send(("error", "RecursionError"))
        except Exception as err:  # noqa: BLE001 - any parser failure is a verdict, not a crash
            replies.send(("error", type(err).__name__))


def main() -> None:
    read_fd, write_fd, memory_mb = (int(arg) for arg in sys.argv[1:4])
    serve(Connection(read_fd, writable=False), Connection(write_fd, readable=False), memory_mb)


if __name__ == "__main__":
    main()
