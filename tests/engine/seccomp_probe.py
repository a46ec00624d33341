"""Calls each syscall that ContainAI's filter removes, and a few ordinary ones; prints JSON.

Run inside a container (python3, standard library only), x86_64. Each call's arguments are chosen so
that a kernel that lets the call through answers something other than EPERM or ENOSYS where it can
(a success, EFAULT, EBADF, EINVAL, ESRCH): then EPERM/ENOSYS is the filter's answer, not the
kernel's. A few (modules, kexec, swap, reboot, acct, pivot_root, open_by_handle_at, bpf) check
capabilities first, so without capabilities they are refused either way.

Output: {"arch": ..., "calls": {name: [return value, errno]}, "threads": bool, "fork": bool}
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import threading

AT_FDCWD = -100
NOWHERE_PID = 0x3FFFFFF0
# name: (x86_64 number, arguments)
CALLS: dict[str, tuple[int, tuple[int, ...]]] = {
    "ptrace": (101, (2, NOWHERE_PID, 0, 0)),  # PTRACE_PEEKDATA on no process: ESRCH
    "process_vm_readv": (310, (os.getpid(), 0, 0, 0, 0, 0)),  # nothing to copy: 0
    "process_vm_writev": (311, (os.getpid(), 0, 0, 0, 0, 0)),
    "userfaultfd": (323, (1,)),  # UFFD_USER_MODE_ONLY: allowed unprivileged
    "perf_event_open": (298, (0, 0, -1, -1, 0)),  # no attr: EFAULT
    "io_uring_setup": (425, (0, 0)),  # zero entries: EINVAL
    "io_uring_enter": (426, (-1, 0, 0, 0, 0, 0)),  # EBADF
    "io_uring_register": (427, (-1, 0, 0, 0)),
    "keyctl": (250, (0, 0xFFFFFFFD, 0)),  # KEYCTL_GET_KEYRING_ID of the session keyring
    "add_key": (248, (0, 0, 0, 0, 0)),  # no type: EFAULT
    "request_key": (249, (0, 0, 0, 0)),
    "bpf": (321, (0x7FFF, 0, 0)),
    "kexec_load": (246, (0, 0, 0, 0)),
    "kexec_file_load": (320, (-1, -1, 0, 0, 0)),
    "mount": (165, (0, 0, 0, 0, 0)),  # no target: EFAULT
    "umount2": (166, (0, 0xFFFFFFFF)),  # unknown flags: EINVAL
    "unshare": (272, (0,)),  # no flags: a no-op that succeeds
    "setns": (308, (-1, 0)),  # EBADF
    "open_by_handle_at": (304, (-1, 0, 0)),
    "name_to_handle_at": (303, (AT_FDCWD, 0, 0, 0, 0)),  # no path: EFAULT
    "pivot_root": (155, (0, 0)),
    "chroot": (161, (0,)),  # EFAULT
    "swapon": (167, (0, 0)),
    "swapoff": (168, (0,)),
    "reboot": (169, (0, 0, 0, 0)),
    "init_module": (175, (0, 0, 0)),
    "finit_module": (313, (-1, 0, 0)),
    "delete_module": (176, (0, 0)),
    "acct": (163, (0,)),
    "settimeofday": (164, (0, 0)),  # nothing to set: 0
    "clock_settime": (227, (0, 0)),  # EFAULT
    "adjtimex": (159, (0,)),  # EFAULT
    "clock_adjtime": (305, (0, 0)),
    "lookup_dcookie": (212, (0, 0, 0)),
    "quotactl": (179, (0, 0, 0, 0)),
    "fanotify_init": (300, (0x200, 0)),  # FAN_REPORT_FID: allowed unprivileged
    "fanotify_mark": (301, (-1, 0, 0, 0, 0)),
    "personality": (135, (0x0400000,)),  # READ_IMPLIES_EXEC
    "clone": (56, (0x10000000 | 0x200, 0, 0, 0, 0)),  # CLONE_NEWUSER | CLONE_FS: EINVAL
    "clone3": (435, (0, 0)),  # EINVAL
    "kcmp": (312, (os.getpid(), os.getpid(), 0, 0, 0)),  # KCMP_FILE, fd 0 with itself: 0
    "pidfd_getfd": (438, (-1, 0, 0)),  # EBADF
    # Ordinary: these must work.
    "getpid": (39, ()),
    "personality_query": (135, (0xFFFFFFFF,)),
}


def call(libc: ctypes.CDLL, number: int, args: tuple[int, ...]) -> tuple[int, int]:
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(number), *(ctypes.c_long(a) for a in args))
    return result, ctypes.get_errno() if result == -1 else 0


def main() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    calls = {}
    if platform.machine() == "x86_64":
        calls = {name: call(libc, number, args) for name, (number, args) in CALLS.items()}
    ran = []
    thread = threading.Thread(target=lambda: ran.append(True))  # glibc tries clone3, then clone
    thread.start()
    thread.join()
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    _, status = os.waitpid(pid, 0)
    print(
        json.dumps(
            {
                "arch": platform.machine(),
                "calls": calls,
                "threads": ran == [True],
                "fork": os.waitstatus_to_exitcode(status) == 7,
            }
        )
    )


if __name__ == "__main__":
    main()
