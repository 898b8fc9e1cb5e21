#!/usr/bin/env python3
"""The `legacy-xp` WIA minidriver as an external driver process (Python 3, stdlib only).

Correct for Windows XP, but it ignores WIA_EVENT_CANCEL_IO during a transfer, as Microsoft's own
WIA 2.0 sample driver does, and says so: its hello claims no asynchronous cancel. It answers
every notify with notify_done at once. Everything else is reference_driver.py.

    scanconform run --driver exec:'python3 conformance/examples/legacy_xp_driver.py'
"""

import os
import sys

sys.dont_write_bytecode = True  # keep the examples folder free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import reference_driver  # noqa: E402  (found through the path set above)

if __name__ == "__main__":
    try:
        sys.exit(reference_driver.Driver(legacy_xp=True).serve())
    except EOFError:
        sys.exit(0)
