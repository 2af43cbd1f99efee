"""FAKE aiopslab.utils.critical_section: a block during which SIGINT is held
back and re-raised as KeyboardInterrupt when the block ends (as the real one;
only the main thread can install the handler). SIGTERM is not deferred."""

import signal
import threading


class CriticalSection:
    def __enter__(self):
        self.signaled = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._defer)
        return self

    def _defer(self, signum, frame):
        self.signaled = True
        print("\nCtrl+C detected! Deferred until the critical section ends.")

    def __exit__(self, exc_type, exc_val, exc_tb):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            if self.signaled:
                raise KeyboardInterrupt
        return False
