"""The governor near a full execution-time window: it stops while one request's time is left, not at zero.

Dataverse adds a request's execution time to the window when the request completes, so the requests in
flight fill a window whose last header still showed room; every request sent after that gets a 429 (at
1M records, 27 429s and 21 requests inside a Retry-After in one load). The governor learns one request's
time from how far a web server's `x-ms-ratelimit-time-remaining-xrm-requests` falls between answers, and
once no more than that is left it sends only a lone probe when nothing is in flight.
"""

from __future__ import annotations

import asyncio

from shared.dataverse.governor import Governor, GovernorConfig


class Requests:
    """Requests sent through the governor, each held in flight until its answer is let through."""

    def __init__(self, governor: Governor) -> None:
        self.governor = governor
        self.answers: list[asyncio.Event] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.entered: list[int] = []
        """Indexes of the requests the governor let out, in the order it did."""

    def send(self, n: int = 1) -> None:
        for _ in range(n):
            answer = asyncio.Event()
            self.answers.append(answer)
            self.tasks.append(asyncio.create_task(self._one(len(self.tasks), answer)))

    async def _one(self, index: int, answer: asyncio.Event) -> None:
        async with self.governor.slot():
            self.entered.append(index)
            await answer.wait()

    async def answer(self, index: int, time_remaining: str | None = None, server: str | None = None) -> None:
        """Request `index` is answered (with these headers) and leaves its slot."""
        if time_remaining is not None:
            self.governor.observe("16", "5000", time_remaining, server)
        self.answers[index].set()
        await settle()


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


def test_it_stops_while_one_requests_time_is_left_and_then_probes_alone() -> None:
    async def scenario() -> None:
        governor = Governor(GovernorConfig(initial_concurrency=16))
        governor.observe("16", "5000", "1,200,000.00")
        requests = Requests(governor)
        requests.send(4)
        await settle()
        assert governor.in_flight == 4
        await requests.answer(0, "1,190,000.00")  # one request's time: 10 s
        await requests.answer(1, "9,000.00")  # less than one request's time is left; two still in flight
        requests.send(2)
        await settle()
        assert governor.in_flight == 2, "no request may join those that will fill the window"
        await requests.answer(2, "0.00")
        assert governor.in_flight == 1
        await requests.answer(3, "0.00")
        assert governor.in_flight == 1, "with nothing in flight one probe goes, alone"
        assert requests.entered[4:] == [4]
        await requests.answer(4, "600,000.00")  # the window slid: room again
        assert governor.in_flight == 1 and requests.entered[5:] == [5]
        await requests.answer(5)
        await asyncio.gather(*requests.tasks)

    asyncio.run(scenario())


def test_each_web_server_answers_for_its_own_window() -> None:
    """Answers alternate between two web servers with different room; the cost is learned per server
    (the fall between two answers of the same one), so the gap between their windows is not taken for
    one request's time."""

    async def scenario() -> None:
        governor = Governor(GovernorConfig(initial_concurrency=16))
        requests = Requests(governor)
        requests.send(4)
        await settle()
        await requests.answer(0, "1,000,000.00", server="a")
        await requests.answer(1, "500,000.00", server="b")
        await requests.answer(2, "990,000.00", server="a")
        await requests.answer(3, "490,000.00", server="b")
        requests.send(8)
        await settle()
        assert governor.in_flight == 8, "490 s left on server b is room for many 10-second requests"
        for index in range(4, 12):
            await requests.answer(index)
        await asyncio.gather(*requests.tasks)

    asyncio.run(scenario())


def test_after_a_429_one_probe_goes_first_and_its_answer_releases_the_rest() -> None:
    async def scenario() -> None:
        governor = Governor(GovernorConfig(initial_concurrency=16, retry_after_margin=0.0, release_spread=0.0))
        governor.observe("16", "5000", "1,000,000.00")
        await governor.throttled_for(0.05)
        requests = Requests(governor)
        requests.send(4)
        await asyncio.sleep(0.1)  # the Retry-After has passed
        await settle()
        assert governor.in_flight == 1, "Retry-After says when the window drops below the limit, not by how much"
        await requests.answer(requests.entered[0], "900,000.00")
        assert governor.in_flight == 3
        for index in requests.entered[1:]:
            await requests.answer(index)
        await asyncio.gather(*requests.tasks)

    asyncio.run(scenario())
