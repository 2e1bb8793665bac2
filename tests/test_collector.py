"""Objects made while a controller starts are left out of garbage collection."""

import gc
import weakref

from pbx_control import collector


class Node:
    pass


def test_what_survives_starting_is_frozen_and_garbage_is_collected_first():
    cycle = Node()
    cycle.self = cycle
    gone = weakref.ref(cycle)
    del cycle
    kept = Node()
    gc.unfreeze()
    try:
        frozen = collector.freeze_startup_objects()

        assert gone() is None  # collected, not frozen for the life of the process
        assert frozen == gc.get_freeze_count() > 0
        assert not any(o is kept for o in gc.get_objects())  # walked by no collection
    finally:
        gc.unfreeze()

    assert any(o is kept for o in gc.get_objects())
