"""Runs `bezier-distill ARGS...` and SIGKILLs the process while it writes FILE for the N-th time.

    python kill_during_write.py FILE N ARGS...

files.atomic_write writes a temp file, fsyncs it, then renames it onto FILE; the kill comes at the
fsync of the temp file for FILE, so the bytes are on disk under the temp name and FILE is untouched:
what a power cut or an OOM kill in the middle of the write leaves.
"""
import os
import signal
import sys

from bezier_distill import cli

real_fsync = os.fsync


def main() -> None:
    file, occurrence, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    seen = 0

    def fsync(fd: int) -> None:
        nonlocal seen
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(f".{file}."):
            seen += 1
            if seen == occurrence:
                os.kill(os.getpid(), signal.SIGKILL)
        real_fsync(fd)

    os.fsync = fsync
    sys.exit(cli.main(argv))


if __name__ == "__main__":
    main()
