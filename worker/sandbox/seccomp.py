"""A seccomp filter for the bubblewrap backend, as raw classic BPF (bwrap --seccomp FD).

Podman and docker apply their own default profiles; bwrap applies none, so this one refuses (EPERM) the
system calls that containers' defaults refuse and that reach kernel code shared with the host: keyrings
(not namespaced), eBPF, perf events, userfaultfd, io_uring, module and kexec loading, handle-based opens,
mounts and namespace changes, ptrace and cross-process memory access, swap, reboot, accounting, syslog.
Any other architecture than the host's (x86_64) is killed outright, and x32 system calls (which would
slip past a number-based filter) are refused. On other host architectures no filter is built and bwrap's
namespaces and dropped capabilities stand alone.

Imports the stdlib only; must not import Celery, SQLAlchemy, FastAPI or torch.
"""

from __future__ import annotations

import platform
import struct

_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_SYSCALL_BIT = 0x40000000
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO_EPERM = 0x00050000 | 1
_RET_KILL_PROCESS = 0x80000000
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_RET_K = 0x06

# x86_64 numbers (arch/x86/entry/syscalls/syscall_64.tbl).
DENIED_X86_64 = {
    "ptrace": 101,
    "syslog": 103,
    "vhangup": 153,
    "pivot_root": 155,
    "acct": 163,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "iopl": 172,
    "ioperm": 173,
    "init_module": 175,
    "delete_module": 176,
    "quotactl": 179,
    "lookup_dcookie": 212,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
    "perf_event_open": 298,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "open_tree": 428,
    "move_mount": 429,
    "mount_setattr": 442,
}


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def build_filter() -> bytes | None:
    """The filter program (struct sock_filter[]), or None where the host is not x86_64."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    numbers = sorted(set(DENIED_X86_64.values()))
    # Layout: 0 load arch; 1 arch check; 2 load nr; 3 x32 check; 4.. one jeq per number; allow; deny; kill.
    count = len(numbers)
    allow = 4 + count
    deny = allow + 1
    kill = deny + 1
    program = [
        _insn(_LD_W_ABS, 0, 0, 4),
        _insn(_JEQ_K, 0, kill - 2, _AUDIT_ARCH_X86_64),
        _insn(_LD_W_ABS, 0, 0, 0),
        _insn(_JGE_K, deny - 4, 0, _X32_SYSCALL_BIT),
    ]
    for index, number in enumerate(numbers):
        position = 4 + index
        program.append(_insn(_JEQ_K, deny - position - 1, 0, number))
    program += [_insn(_RET_K, 0, 0, _RET_ALLOW), _insn(_RET_K, 0, 0, _RET_ERRNO_EPERM)]
    program.append(_insn(_RET_K, 0, 0, _RET_KILL_PROCESS))
    return b"".join(program)
