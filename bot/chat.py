"""The terminal adapter: `counsel-bot chat`.

On a terminal: an interactive conversation with streamed replies. Otherwise: one message per input line, one
reply per message on stdout (new lines inside a reply folded to spaces; `--json` keeps them, one JSON object per
line), exit on EOF. Notices and progress go to stderr so stdout stays machine-readable.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from typing import TextIO

from bot.runtime import Runtime
from bot.types import IncomingMessage, Reply

USER_ID = "local"


async def run_chat(rt: Runtime, stdin: TextIO, stdout: TextIO, as_json: bool, interactive: bool) -> int:
    n = 0
    if interactive:
        from rich.console import Console

        console = Console()
        console.print("[bold]Counsel[/bold] - type a message, /help for commands, /quit to leave.", style="dim")
    while True:
        if interactive:
            try:
                line = await asyncio.to_thread(console.input, "[bold cyan]you>[/bold cyan] ")
            except (EOFError, KeyboardInterrupt):
                console.print()
                return 0
        else:
            line = await asyncio.to_thread(stdin.readline)
            if not line:
                return 0
            line = line.rstrip("\r\n")
        if line.strip().lower() in ("/quit", "/exit", "/q"):
            return 0
        n += 1
        msg = IncomingMessage(platform="terminal", user_id=USER_ID, text=line, message_id=None)
        if interactive:
            await _interactive_turn(rt, msg, console)
        else:
            reply = await rt.manager.handle(msg)
            _print_plain(reply, stdout, as_json)


def _print_plain(reply: Reply | None, stdout: TextIO, as_json: bool) -> None:
    if reply is None:
        reply = Reply("", kind="invalid")
    if as_json:
        stdout.write(json.dumps(reply.as_json(), ensure_ascii=False) + "\n")
    else:
        if reply.notice:
            print(reply.notice, file=sys.stderr)
        stdout.write(re.sub(r"\s*\n\s*", " ", reply.text).strip() + "\n")
    stdout.flush()


async def _interactive_turn(rt: Runtime, msg: IncomingMessage, console) -> None:
    streamed = ""

    async def on_partial(text: str) -> None:
        nonlocal streamed
        if not streamed:
            console.print("[bold green]counsel>[/bold green] ", end="")
        console.out(text[len(streamed):], end="", highlight=False)
        streamed = text

    async def on_notice(notice: str) -> None:
        console.print(notice, style="yellow")

    reply = await rt.manager.handle(msg, on_partial=on_partial, on_notice=on_notice)
    if reply is None:
        return
    if streamed and reply.text.startswith(streamed.rstrip()):
        console.out(reply.text[len(streamed.rstrip()):], highlight=False)
    else:
        if streamed:  # the output guard replaced what was streamed
            console.print("\n[dim](revised)[/dim]")
        console.print("[bold green]counsel>[/bold green] ", end="")
        console.print(reply.text, style="bold red" if reply.crisis else None, highlight=False)
    if reply.notice:
        console.print(reply.notice, style="yellow")
