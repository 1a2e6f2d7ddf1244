"""Long-poll wake-ups: one per new execution, oldest waiter first, never lost."""

from appliance.service import WorkSignal


def test_notify_wakes_only_the_oldest_waiter():
    work = WorkSignal()
    first, second = work.waiter("a"), work.waiter("a")
    work.notify("a")
    assert first.event.is_set() and not second.event.is_set()


def test_notify_on_another_lane_wakes_nobody():
    work = WorkSignal()
    waiter = work.waiter("a")
    work.notify("b")
    assert not waiter.event.is_set()


def test_a_wake_up_the_claimer_did_not_need_goes_to_the_next_waiter():
    work = WorkSignal()
    busy, idle = work.waiter("a"), work.waiter("a")
    work.notify("a")
    work.done("a", busy, claimed=True)
    assert idle.event.is_set()


def test_a_woken_waiter_that_found_nothing_keeps_its_wake_up():
    work = WorkSignal()
    woken, other = work.waiter("a"), work.waiter("a")
    work.notify("a")
    work.done("a", woken, claimed=False)
    assert not other.event.is_set()


def test_notify_all_and_close_release_every_waiter():
    work = WorkSignal()
    a1, a2, b1 = work.waiter("a"), work.waiter("a"), work.waiter("b")
    work.notify_all("a")
    assert a1.event.is_set() and a2.event.is_set() and not b1.event.is_set()
    work.close()
    assert b1.event.is_set() and work.closing


def test_work_wakes_only_as_many_batch_waiters_as_it_keeps_busy():
    work = WorkSignal()
    big, second, small = work.waiter("a", 32), work.waiter("a", 32), work.waiter("a", 1)
    work.notify("a", 32)
    assert big.event.is_set() and not second.event.is_set() and not small.event.is_set()
    work.notify("a", 33)
    assert second.event.is_set() and small.event.is_set()
