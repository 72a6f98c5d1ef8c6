"""The `counsel-bot` console script. Each subcommand builds Settings once and passes them down."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from bot.settings import Settings

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="counsel-bot: a mental-health support assistant for Discord and Slack.")
safety_app = typer.Typer(no_args_is_help=True, help="The crisis screen and the output guard.")
app.add_typer(safety_app, name="safety")

log = logging.getLogger("counsel-bot")


def _settings(**overrides) -> Settings:
    from pydantic import ValidationError

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        typer.echo(f"Configuration error:\n{e}", err=True)
        raise typer.Exit(2) from e


def _start(s: Settings, quiet: bool = False) -> None:
    from bot.ops import start_ops
    from bot.runtime import setup_logging

    setup_logging("WARNING" if quiet else s.log_level, s.log_format)
    log.info("effective configuration: %s", json.dumps(s.redacted(), default=str))
    start_ops(s)  # /healthz /readyz /metrics when COUNSEL_METRICS_PORT is set (bot/ops.py)


@app.command()
def chat(
    json_out: Annotated[bool, typer.Option("--json", help="one JSON object per input line (reply, crisis, ...)")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log to stderr")] = False,
) -> None:
    """Talk to the assistant in this terminal. Reads one message per line when stdin is not a terminal.

    Uses Redis and an external `counsel-bot worker` when COUNSEL_REDIS_URL is set; otherwise everything runs in
    this process on the embedded default model.
    """
    from bot.chat import run_chat
    from bot.runtime import build_runtime
    from model.loading import ModelNotFound

    s = _settings()
    _start(s, quiet=not verbose)
    interactive = sys.stdin.isatty() and sys.stdout.isatty() and not json_out

    async def main() -> int:
        if interactive:
            from rich.console import Console

            with Console(stderr=True).status("loading the model...", spinner="dots"):
                rt = await asyncio.to_thread(build_runtime, s)
        else:
            rt = build_runtime(s)
        try:
            return await run_chat(rt, sys.stdin, sys.stdout, json_out, interactive)
        finally:
            await rt.close()

    try:
        raise typer.Exit(asyncio.run(main()))
    except ModelNotFound as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@safety_app.command("check")
def safety_check() -> None:
    """Screen messages from stdin (one per line); print one JSON object per line: crisis, category, rule."""
    from bot.safety import screen

    for line in sys.stdin:
        result = screen(line.rstrip("\r\n"))
        sys.stdout.write(json.dumps(result.as_json()) + "\n")
        sys.stdout.flush()


def _not_yet(issue: str, what: str) -> None:
    typer.echo(f"`counsel-bot {what}` is not implemented yet (tracked in {issue}).", err=True)
    raise typer.Exit(3)


@app.command()
def worker() -> None:
    """[not yet implemented: the Redis issue] Run the GPU inference worker on the Redis request stream."""
    _not_yet("the 'Production path: Redis' issue", "worker")


@app.command()
def discord() -> None:
    """Run the Discord bot (needs DISCORD_TOKEN): DMs get answers, a server @mention gets an invitation to DM.

    Uses Redis and an external `counsel-bot worker` when COUNSEL_REDIS_URL is set; otherwise the model runs in
    this process. Slash commands /forget, /resources, /help are registered on start.
    """
    from bot.discord_adapter import MISSING_TOKEN, run_discord
    from model.loading import ModelNotFound

    s = _settings()
    if s.discord_token is None or not s.discord_token.get_secret_value().strip():
        typer.echo(MISSING_TOKEN, err=True)
        raise typer.Exit(2)
    _start(s)
    try:
        raise typer.Exit(asyncio.run(run_discord(s)))
    except ModelNotFound as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@app.command()
def slack() -> None:
    """Run the Slack adapter: answers mentions (in a thread) and direct messages.

    Socket Mode when SLACK_APP_TOKEN is set (no public URL needed); otherwise HTTP on COUNSEL_SLACK_PORT at
    /slack/events, verified with SLACK_SIGNING_SECRET. Always needs SLACK_BOT_TOKEN. Create the Slack app from
    bot/slack_manifest.yaml.
    """
    from bot.slack_adapter import missing_settings, serve
    from model.loading import ModelNotFound

    s = _settings()
    missing = missing_settings(s)
    if missing:
        typer.echo(f"error: {missing}", err=True)
        raise typer.Exit(2)
    _start(s)
    try:
        asyncio.run(serve(s))
    except ModelNotFound as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@app.command()
def train() -> None:
    """[not yet implemented: the training issue] Train a LoRA/QLoRA adapter from a recipe."""
    _not_yet("the training issue", "train")


@app.command(name="eval")
def evaluate() -> None:
    """[not yet implemented: the evaluation issue] Compare the base model with adapters on held-out questions."""
    _not_yet("the evaluation issue", "eval")


@app.command()
def retrain() -> None:
    """[not yet implemented: the training issue] Train, evaluate, gate and promote a new adapter."""
    _not_yet("the training issue", "retrain")


if __name__ == "__main__":
    app()
