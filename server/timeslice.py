"""Ask the kernel to run the event loop's thread as soon as a call arrives.

Linux's scheduler (EEVDF, 6.6 and later) lets a running task finish its time slice, 1.4 ms here on
two cores, before a task that has just woken runs: a background `git fetch` or merge holding the
core delays a call that long, even at a lower priority. Since 6.12 a thread may ask
for a shorter slice, and a woken thread with a shorter slice than the running one takes the core at
once. The event loop asks for the shortest (0.1 ms): the CPU it gets over time is unchanged, only
when it gets it. Threads and processes started from it keep the normal slice (reset on fork), so git
and the worker do not get ahead of calls this way. A server started in the idle or a real-time class
(`chrt`) stays as it was started; on other kernels, or where the call is refused, nothing changes.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import struct

log = logging.getLogger("memory_bridge.timeslice")

SLICE_NANOSECONDS = 100_000  # the shortest the kernel accepts
_SYS_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}
_SCHED_FLAG_RESET_ON_FORK = 0x01
# struct sched_attr (version 1): size, policy, flags, nice, priority, runtime, deadline, period,
# util_min, util_max.
_SCHED_ATTR = struct.Struct("=IIQiIQQQII")


def ask_for_short_slice() -> bool:
    """Ask for a short time slice for the calling thread; whether the kernel took it."""
    number = _SYS_SCHED_SETATTR.get(platform.machine())
    if number is None or not hasattr(os, "sched_getscheduler"):
        return False
    policy = os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK  # the calling thread's class
    if policy not in (os.SCHED_OTHER, os.SCHED_BATCH):
        return False  # the idle or a real-time class: whoever started the server chose it
    attr = _SCHED_ATTR.pack(
        _SCHED_ATTR.size,
        policy,
        _SCHED_FLAG_RESET_ON_FORK,
        os.getpriority(os.PRIO_PROCESS, 0),
        0,
        SLICE_NANOSECONDS,
        0,
        0,
        0,
        0,
    )
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        done = libc.syscall(number, 0, ctypes.create_string_buffer(attr, len(attr)), 0) == 0
    except (OSError, AttributeError):
        return False
    if not done:
        log.debug("the kernel kept the normal time slice (errno %d)", ctypes.get_errno())
    return bool(done)
