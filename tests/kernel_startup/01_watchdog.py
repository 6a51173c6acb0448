"""IPython startup file for the tests' kernels: a watchdog for stalled notebooks.

A notebook's default run takes ≤150 s. Once, under nbmake, a kernel sat 18 minutes at 0 % CPU inside a torch
convolution (threads in futex waits) and nbmake's cell timeout never fired, because the kernel was stuck in C
code. ``faulthandler.dump_traceback_later`` runs on its own C thread: after ``BYTECOURSE_KERNEL_WATCHDOG_S``
seconds (default 600) it prints every thread's Python stack to the kernel's stderr (the test log) and ends the
kernel, so the notebook fails fast as a dead kernel — and the test command reruns it once, so only a hang that
happens twice fails the run."""

import faulthandler as _faulthandler
import os as _os
import sys as _sys

_seconds = float(_os.environ.get("BYTECOURSE_KERNEL_WATCHDOG_S", "600"))
if _seconds > 0:
    _faulthandler.dump_traceback_later(_seconds, repeat=False, file=_sys.__stderr__, exit=True)
