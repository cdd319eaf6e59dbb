"""Run a command under the seccomp filter that systemd's ``MemoryDenyWriteExecute=yes``
installs, to learn whether a program tolerates it without a running systemd:

    python -m tests.harness.deny_write_execute -- COMMAND [ARG...]

The rules are systemd's (src/shared/seccomp-util.c, seccomp_memory_deny_write_execute):
EPERM for mmap with PROT_WRITE and PROT_EXEC together, for mprotect and pkey_mprotect
asking for PROT_EXEC, and for shmat with SHM_EXEC. libseccomp (a dependency of systemd on
Debian) is called through ctypes. The filter survives exec and binds every child.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import sys

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_MASKED_EQ = 7
SHM_EXEC = 0o100000


def SCMP_ACT_ERRNO(code: int) -> int:  # noqa: N802 - libseccomp's macro name
    return 0x00050000 | (code & 0x0000FFFF)


class ScmpArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def install_filter() -> None:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(ScmpArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise OSError("seccomp_init failed")
    write_exec = mmap.PROT_WRITE | mmap.PROT_EXEC
    rules = [("mmap", 2, write_exec, write_exec),
             ("mprotect", 2, mmap.PROT_EXEC, mmap.PROT_EXEC),
             ("pkey_mprotect", 2, mmap.PROT_EXEC, mmap.PROT_EXEC),
             ("shmat", 2, SHM_EXEC, SHM_EXEC)]
    for syscall, arg, mask, value in rules:
        number = lib.seccomp_syscall_resolve_name(syscall.encode())
        if number < 0:
            continue  # not on this architecture
        cmp = ScmpArgCmp(arg, SCMP_CMP_MASKED_EQ, mask, value)
        result = lib.seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(errno.EPERM), number, 1,
                                            ctypes.byref(cmp))
        if result < 0:
            raise OSError(-result, f"seccomp_rule_add {syscall}")
    result = lib.seccomp_load(ctx)  # also sets no_new_privs, as NoNewPrivileges= does
    if result < 0:
        raise OSError(-result, "seccomp_load")


def main(argv: list[str]) -> None:
    if not argv or argv[0] != "--" or len(argv) < 2:
        sys.exit("usage: python -m tests.harness.deny_write_execute -- COMMAND [ARG...]")
    install_filter()
    os.execvp(argv[1], argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
