"""Kernel attack surface: try to create user, mount and network namespaces, and to mount or chroot.

Every attempt runs in a throwaway child and touches nothing shared, so the control run on the host is safe.

Each attempt calls libc directly (ctypes); prints JSON mapping the attempt to "allowed" or the errno name.
"""

import ctypes
import errno
import json
import os
import tempfile

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
MS_REC, MS_PRIVATE = 0x4000, 0x40000
libc = ctypes.CDLL(None, use_errno=True)


def attempt(call) -> str:
    if call() >= 0:
        return "allowed"
    return errno.errorcode.get(ctypes.get_errno(), "unknown")


def in_child(call) -> str:
    # unshare changes the calling process, so each attempt runs in a fresh child.
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.write(write, attempt(call).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    return os.read(read, 64).decode() or "child failed"


TARGET = tempfile.mkdtemp()


def private_mount() -> int:
    # Harmless wherever it runs: in a new mount namespace, made private first so nothing propagates back,
    # a tmpfs on a fresh empty directory. Where the namespace is refused, the bare mount is tried instead.
    if libc.unshare(CLONE_NEWNS) == 0 and libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return -1
    return libc.mount(b"none", TARGET.encode(), b"tmpfs", 0, None)


print(
    json.dumps(
        {
            "unshare_user": in_child(lambda: libc.unshare(CLONE_NEWUSER)),
            "unshare_mount": in_child(lambda: libc.unshare(CLONE_NEWNS)),
            "unshare_net": in_child(lambda: libc.unshare(CLONE_NEWNET)),
            "mount_tmpfs": in_child(private_mount),
            "chroot": in_child(lambda: libc.chroot(b"/tmp")),
            # Kernel interfaces shared with the host; the arguments make each call harmless (or an EFAULT)
            # where it is let through, so only "EPERM"/"ENOSYS" mean a filter stopped it.
            "keyctl": in_child(lambda: libc.syscall(250, 0, -3, 0)),
            "bpf": in_child(lambda: libc.syscall(321, 0, None, 0)),
            "perf_event_open": in_child(lambda: libc.syscall(298, None, 0, -1, -1, 0)),
            "io_uring_setup": in_child(lambda: libc.syscall(425, 1, None)),
            "open_by_handle_at": in_child(lambda: libc.syscall(304, -100, None, 0)),
        }
    )
)
os.rmdir(TARGET)
