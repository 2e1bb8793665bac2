"""How a long-running controller process treats Python's cyclic garbage collector.

A full collection walks every tracked object in the process, and nothing else runs while it
does. Most of those objects are made while starting (SQLAlchemy's tables and statements,
phonenumbers' metadata, gevent, the settings) and live as long as the process; walking them
again several times a minute paused a FreeSWITCH controller for 45-70 ms each time at 300 calls/s,
and every call in set-up waited that long (docs/benchmarks.md). Frozen once started, they are
never walked again; what calls make and drop is collected as before.
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger(__name__)


def freeze_startup_objects() -> int:
    """Collect what starting left behind, then move every surviving object out of the
    collector's reach (``gc.freeze``); returns how many were frozen."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.info("%d objects made while starting are left out of garbage collection", frozen)
    return frozen
