"""The import lock in a forked child: free, whatever thread held it in the parent."""

from __future__ import annotations

import os
import threading

import pytest

from mixprec._import_lock import IMPORT_LOCK


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX only")
def test_a_child_forked_while_another_thread_holds_the_import_lock_can_take_it() -> None:
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with IMPORT_LOCK:
            held.set()
            release.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    pid = os.fork()
    if pid == 0:  # the child: the holding thread is not copied into it
        os._exit(0 if IMPORT_LOCK.acquire(timeout=5) else 1)
    release.set()
    holder.join()
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
