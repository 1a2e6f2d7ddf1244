"""Long-poll wake-ups: one per new execution, oldest waiter first, never lost."""

from appliance.service import WorkSignal


def test_notify_wakes_only_the_oldest_waiter():
    work = WorkSignal()
    first, second = work.waiter("a"), work.waiter("a")
    work.notify("a")
    assert first.is_set() and not second.is_set()


def test_notify_on_another_lane_wakes_nobody():
    work = WorkSignal()
    waiter = work.waiter("a")
    work.notify("b")
    assert not waiter.is_set()


def test_a_wake_up_the_claimer_did_not_need_goes_to_the_next_waiter():
    work = WorkSignal()
    busy, idle = work.waiter("a"), work.waiter("a")
    work.notify("a")
    work.done("a", busy, claimed=True)
    assert idle.is_set()


def test_a_woken_waiter_that_found_nothing_keeps_its_wake_up():
    work = WorkSignal()
    woken, other = work.waiter("a"), work.waiter("a")
    work.notify("a")
    work.done("a", woken, claimed=False)
    assert not other.is_set()


def test_notify_all_and_close_release_every_waiter():
    work = WorkSignal()
    a1, a2, b1 = work.waiter("a"), work.waiter("a"), work.waiter("b")
    work.notify_all("a")
    assert a1.is_set() and a2.is_set() and not b1.is_set()
    work.close()
    assert b1.is_set() and work.closing
