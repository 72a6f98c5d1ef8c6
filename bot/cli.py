"""The `counsel-bot` console script. Each subcommand builds Settings once and passes them down."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
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


def _start(s: Settings, quiet: bool = False, **checks) -> None:
    from bot.ops import start_ops
    from bot.runtime import setup_logging

    setup_logging("WARNING" if quiet else s.log_level, s.log_format)
    log.info("effective configuration: %s", json.dumps(s.redacted(), default=str))
    start_ops(s, **checks)  # /healthz /readyz /metrics when COUNSEL_METRICS_PORT is set (bot/ops.py)


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
    if not verbose:  # library deprecation notices are for developers, not for someone in a conversation
        import warnings

        warnings.filterwarnings("ignore", category=FutureWarning)
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
def safety_check(
    rules_only: Annotated[bool, typer.Option("--rules-only", help="skip the embedding layer (same as "
                                                                  "COUNSEL_SAFETY_EMBEDDING=false)")] = False,
) -> None:
    """Screen messages from stdin (one per line); print one JSON object per line: crisis, category, rule."""
    from bot.safety import embed, screen

    embed.configure(_settings().safety_embedding and not rules_only)
    sys.stdin.reconfigure(errors="replace")
    for line in sys.stdin:
        result = screen(line.rstrip("\r\n"))
        sys.stdout.write(json.dumps(result.as_json()) + "\n")
        sys.stdout.flush()


@app.command()
def worker(
    batch_size: Annotated[Optional[int], typer.Option(
        help="most requests per batch [default: COUNSEL_WORKER_BATCH_SIZE or 8]")] = None,
    batch_wait_ms: Annotated[Optional[int], typer.Option(
        help="after the first request, wait this long for more to fill the batch "
             "[default: COUNSEL_WORKER_BATCH_WAIT_MS or 20]")] = None,
    claim_idle_s: Annotated[float, typer.Option(
        help="take over requests left pending this long by a dead worker")] = 60.0,
    heartbeat_s: Annotated[float, typer.Option(help="how often the heartbeat key (and log line) is written")] = 5.0,
    name: Annotated[Optional[str], typer.Option(help="consumer name in the group [default: host-pid]")] = None,
) -> None:
    """Run the inference worker on the Redis request stream (needs COUNSEL_REDIS_URL).

    Loads the model once (COUNSEL_BASE_MODEL, COUNSEL_ADAPTER, ...), then reads
    batches of requests from the stream, generates, guards and publishes replies.
    Several workers (GPUs, hosts) on one Redis share the consumer group; requests
    of a worker that dies are taken over after --claim-idle-s. An adapter path
    published on the reload channel (by retrain) is loaded between batches.
    SIGTERM or Ctrl-C finishes the batch in hand, then exits.
    """
    import signal

    from bot.runtime import load_engine
    from bot.safety import Guard
    from model.loading import ModelNotFound
    from model.redis_io import connect
    from model.worker import InferenceWorker, WorkerConfig

    import threading

    s = _settings(worker_batch_size=batch_size, worker_batch_wait_ms=batch_wait_ms)
    model_loaded = threading.Event()
    _start(s, model=model_loaded.is_set)  # /readyz says not ready until the model is loaded, from its first answer
    if not s.redis_url:
        typer.echo("error: `counsel-bot worker` needs COUNSEL_REDIS_URL (the Redis its bots submit to).", err=True)
        raise typer.Exit(2)
    try:
        engine = load_engine(s)
    except ModelNotFound as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    model_loaded.set()

    def engine_for(adapter: str | None):  # adapter rollout: the same model settings with another adapter
        return load_engine(s.model_copy(update={"adapter": adapter or "none"}))

    cfg = WorkerConfig(batch_size=s.worker_batch_size, batch_wait_ms=s.worker_batch_wait_ms,
                       claim_idle_ms=int(claim_idle_s * 1000), heartbeat_s=heartbeat_s)
    if name:
        cfg.name = name

    async def main() -> None:
        w = InferenceWorker(connect(s.redis_url, s.redis_timeout_s), engine, Guard(s.region), cfg, engine_for,
                            adapter=getattr(getattr(engine, "loaded", None), "adapter", None))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, w.stop)
        await w.run()

    asyncio.run(main())


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


# Training subcommands live in training/cli.py (options and lazy heavy imports).
from training import cli as _training_cli  # noqa: E402

app.command(name="train")(_training_cli.train)


# `counsel-bot eval` lives in training/evaluate.py (options and lazy heavy imports).
from training import evaluate as _evaluate  # noqa: E402

app.command(name="eval")(_evaluate.cli)


app.command(name="retrain")(_training_cli.retrain)


if __name__ == "__main__":
    app()
