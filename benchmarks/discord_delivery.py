"""What the Discord adapter adds to a turn: time to the first visible text, time to the final text, REST writes.

Baseline: the ConversationManager alone (`handle` with an `on_partial` callback), timed from the call to the first
partial text and to the returned reply. Adapter: the real discord.Client fed a DM MESSAGE_CREATE through discord.py's
gateway handling, REST recorded at discord.py's HTTP layer (no network), timed from the gateway frame to the
typing call, the first message POST and the last message write. Both use the same runtime (in-process SmolLM2);
the turns alternate so machine load affects both alike.

Run:  .venv/bin/python benchmarks/discord_delivery.py [--turns 6] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import discord  # noqa: E402
from discord.webhook.async_ import AsyncWebhookAdapter  # noqa: E402

from bot.discord_adapter import CounselBot  # noqa: E402
from bot.runtime import build_runtime  # noqa: E402
from bot.settings import Settings  # noqa: E402
from bot.types import IncomingMessage  # noqa: E402
from tests.bot.discord_fakes import DM_CHANNEL_ID, Gateway, RestRecorder, dm_message  # noqa: E402

QUESTIONS = [
    "I feel anxious before every exam. What can I do?",
    "My partner and I keep arguing about small things.",
    "I can't sleep because my mind keeps racing at night.",
    "How do I tell my parents I'm struggling at university?",
]


def p50(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


async def main(turns: int, max_new_tokens: int) -> None:
    s = Settings(max_new_tokens=max_new_tokens, temperature=0.0, discord_token="benchmark", _env_file=None)
    rest = RestRecorder()
    discord.http.HTTPClient.request = rest._http_request  # the network edge, as in tests/bot/test_discord.py
    AsyncWebhookAdapter.request = rest._webhook_request
    bot = CounselBot(s, guild_ready_timeout=0.05)
    rt = build_runtime(s, on_crisis=bot.alert_admins)
    bot.manager = rt.manager
    await bot.login("benchmark")
    gw = Gateway(bot)
    await gw.connect()
    await rt.manager.handle(IncomingMessage("bench", "warm", "Hello, warming up."))  # model and screen warm-up

    base = {"first": [], "final": []}
    adapter = {"typing": [], "first": [], "final": [], "writes": []}
    for i in range(turns):
        q = QUESTIONS[i % len(QUESTIONS)]
        # baseline: the manager alone
        first: list[float] = []

        async def on_partial(text: str) -> None:
            if not first:
                first.append(time.perf_counter())

        t0 = time.perf_counter()
        await rt.manager.handle(IncomingMessage("bench", f"b{i}", q, message_id=f"b{i}"), on_partial=on_partial)
        base["final"].append(time.perf_counter() - t0)
        base["first"].append((first[0] if first else time.perf_counter()) - t0)
        # the adapter: a DM from a person who has already seen the first-contact notice
        await rt.state.set_field("discord:1200000000000000001", "seen", "1")
        rest.clock = time.perf_counter
        before = len(rest.calls)
        t0 = time.perf_counter()
        await gw.send("MESSAGE_CREATE", dm_message(q))
        calls = [c for c in rest.calls[before:] if c.path.startswith(f"/channels/{DM_CHANNEL_ID}/")]
        writes = [c for c in calls if "/messages" in c.path]
        adapter["typing"].append(next(c.t for c in calls if c.path.endswith("/typing")) - t0)
        adapter["first"].append(writes[0].t - t0)
        adapter["final"].append(writes[-1].t - t0)
        adapter["writes"].append(len(writes))
        await rt.manager.forget("discord:1200000000000000001")

    print(f"{turns} DM turns, max_new_tokens={max_new_tokens}, in-process SmolLM2, {os.cpu_count()} CPUs "
          f"(load average {os.getloadavg()[0]:.1f})")
    print("| path | typing shown p50 s | first text p50 s | final text p50 s | message writes per reply |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| manager alone (baseline) | - | {p50(base['first']):.2f} | {p50(base['final']):.2f} | - |")
    print(f"| Discord adapter | {p50(adapter['typing']):.3f} | {p50(adapter['first']):.2f} | "
          f"{p50(adapter['final']):.2f} | {p50(adapter['writes']):.0f} (max {max(adapter['writes'])}) |")
    await bot.close()
    await rt.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=6)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    a = ap.parse_args()
    asyncio.run(main(a.turns, a.max_new_tokens))
