import threading

import pytest

from servekit.errors import ApiError
from servekit.limits import Slots


def test_slots_refuse_beyond_their_size_and_free_up_again():
    slots = Slots(2, "evaluations are")
    inside, release = threading.Barrier(3), threading.Event()

    def hold():
        with slots.take():
            inside.wait()
            release.wait()

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for holder in holders:
        holder.start()
    inside.wait()  # both slots are held now
    with pytest.raises(ApiError) as refused:
        with slots.take():
            pass
    assert refused.value.status == 429 and refused.value.headers == {"Retry-After": "5"}
    assert "2 evaluations are already running" in refused.value.message
    release.set()
    for holder in holders:
        holder.join()
    with slots.take():  # free again
        pass


def test_a_failure_inside_gives_the_slot_back():
    slots = Slots(1, "benchmark is", status=409)
    with pytest.raises(RuntimeError):
        with slots.take():
            raise RuntimeError("the work failed")
    with slots.take():
        pass
