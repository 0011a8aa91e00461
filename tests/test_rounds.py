"""InputRounds: how a modern-era host is asked for input mid-call, and what happens when it never answers."""

from __future__ import annotations

from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from fmos_mcp.gateway.relay import InputRounds, RoundBinding, RoundChannel


class Leg:
    """Stands in for the host request a round answers (progress and logs are not under test here)."""

    async def progress(self, *args: Any) -> None: ...

    async def log(self, *args: Any) -> None: ...


BINDING = RoundBinding("tenant-a", "tools/call", "srv__tool")


def elicit_params(message: str) -> types.ElicitRequestFormParams:
    return types.ElicitRequestFormParams(message=message, requested_schema={"type": "object", "properties": {}})


async def run_rounds(rounds: InputRounds, body: Any) -> None:
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(rounds.run)
        await anyio.sleep(0)
        try:
            await body()
        finally:
            tasks.cancel_scope.cancel()


async def test_work_asks_host_answers_and_work_resumes_with_the_answer() -> None:
    rounds = InputRounds(ttl=5)

    async def work(channel: RoundChannel) -> str:
        answer = await channel.request("elicitation/create", elicit_params("ok?"))
        return f"got {answer.action}"

    async def body() -> None:
        rnd = rounds.start(BINDING, work, Leg())
        first = await rounds.next_answer(rnd)
        assert isinstance(first, types.InputRequiredResult)
        [(key, request)] = first.input_requests.items()
        assert request.method == "elicitation/create" and first.request_state == rnd.token
        resumed = rounds.resume(first.request_state, BINDING, {key: types.ElicitResult(action="accept", content={})}, Leg())
        assert await rounds.next_answer(resumed) == "got accept"
        assert len(rounds) == 0

    await run_rounds(rounds, body)


async def test_sibling_requests_are_gathered_into_one_result() -> None:
    rounds = InputRounds(ttl=5)

    async def work(channel: RoundChannel) -> list[str]:
        results: list[str] = []

        async def ask(i: int) -> None:
            results.append((await channel.request("elicitation/create", elicit_params(f"q{i}"))).action)

        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(ask, i)
        return sorted(results)

    async def body() -> None:
        rnd = rounds.start(BINDING, work, Leg())
        first = await rounds.next_answer(rnd)
        assert len(first.input_requests) == 3
        answers = {k: types.ElicitResult(action="decline") for k in first.input_requests}
        assert await rounds.next_answer(rounds.resume(rnd.token, BINDING, answers, Leg())) == ["decline"] * 3

    await run_rounds(rounds, body)


async def test_an_unanswered_round_expires_and_cancels_the_work() -> None:
    rounds = InputRounds(ttl=0.3)
    cancelled = anyio.Event()

    async def work(channel: RoundChannel) -> str:
        try:
            await channel.request("sampling/createMessage", types.CreateMessageRequestParams(messages=[], max_tokens=5))
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise
        return "unreachable"

    async def body() -> None:
        rnd = rounds.start(BINDING, work, Leg())
        first = await rounds.next_answer(rnd)
        assert isinstance(first, types.InputRequiredResult)
        with anyio.fail_after(5):
            await cancelled.wait()
        with pytest.raises(MCPError, match="Invalid or expired requestState"):
            rounds.resume(first.request_state, BINDING, {}, Leg())
        assert len(rounds) == 0

    await run_rounds(rounds, body)


async def test_a_retry_must_come_from_the_same_tenant_for_the_same_call() -> None:
    rounds = InputRounds(ttl=5)

    async def work(channel: RoundChannel) -> Any:
        return await channel.request("roots/list", None)

    async def body() -> None:
        rnd = rounds.start(BINDING, work, Leg())
        first = await rounds.next_answer(rnd)
        for other in (RoundBinding("tenant-b", "tools/call", "srv__tool"), RoundBinding("tenant-a", "tools/call", "srv__x")):
            with pytest.raises(MCPError, match="Invalid or expired requestState"):
                rounds.resume(first.request_state, other, {}, Leg())
        with pytest.raises(MCPError):
            rounds.resume("forged-token", BINDING, {}, Leg())
        [key] = first.input_requests
        resumed = rounds.resume(first.request_state, BINDING, {key: types.ListRootsResult(roots=[])}, Leg())
        assert (await rounds.next_answer(resumed)).roots == []

    await run_rounds(rounds, body)


async def test_a_missing_answer_fails_that_request_and_an_abandoned_leg_stops_the_work() -> None:
    rounds = InputRounds(ttl=5)
    stopped = anyio.Event()

    async def work(channel: RoundChannel) -> str:
        try:
            await channel.request("roots/list", None)
        except MCPError as exc:
            assert "no answer" in exc.error.message
        try:
            await anyio.sleep_forever()
        finally:
            stopped.set()
        return "unreachable"

    async def body() -> None:
        rnd = rounds.start(BINDING, work, Leg())
        await rounds.next_answer(rnd)
        resumed = rounds.resume(rnd.token, BINDING, {}, Leg())  # the host answered nothing
        with anyio.move_on_after(0.2):  # the host gives up on this leg
            await rounds.next_answer(resumed)
        with anyio.fail_after(5):
            await stopped.wait()
        assert len(rounds) == 0

    await run_rounds(rounds, body)


async def test_a_second_retry_of_the_same_round_is_refused_while_one_waits() -> None:
    rounds = InputRounds(ttl=5)
    release = anyio.Event()

    async def work(channel: RoundChannel) -> str:
        await channel.request("roots/list", None)
        await release.wait()
        return "finished"

    async def body() -> None:
        rnd = rounds.start(BINDING, work, Leg())
        first = await rounds.next_answer(rnd)
        [key] = first.input_requests
        answers = {key: types.ListRootsResult(roots=[])}
        resumed = rounds.resume(first.request_state, BINDING, answers, Leg())
        async with anyio.create_task_group() as tg:
            results: list[Any] = []

            async def wait_leg() -> None:
                results.append(await rounds.next_answer(resumed))

            tg.start_soon(wait_leg)
            await anyio.sleep(0.05)
            with pytest.raises(MCPError, match="already waiting"):
                rounds.resume(first.request_state, BINDING, answers, Leg())
            release.set()
        assert results == ["finished"]

    await run_rounds(rounds, body)
