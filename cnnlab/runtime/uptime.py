"""How long this process has run: what `cnnlab train` prints as the command's wall time.

Counted from the kernel's record of when the process started (Linux /proc), so the
interpreter's own start and every import count, as they do for the person waiting.
Where there is no such record, from the moment cnnlab was first imported, which
misses only the interpreter's start.
"""

import os
import time
from pathlib import Path

IMPORTED = time.perf_counter()


def process_seconds():
    """Seconds since this process started."""
    try:
        # /proc/self/stat: the 22nd field is the start in clock ticks since boot; the name (2nd) may hold spaces
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):  # not Linux (no /proc, no CLOCK_BOOTTIME)
        return time.perf_counter() - IMPORTED
