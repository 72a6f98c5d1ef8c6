"""`counsel-bot train` and `counsel-bot retrain` (registered in bot/cli.py). Heavy imports happen inside."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

log = logging.getLogger(__name__)

RecipeOpt = Annotated[str, typer.Option("--recipe", "-r", help="a YAML file, or a name in training/recipes/ "
                                                                "(smollm2-cpu, smollm2-lora, smollm2-qlora, llama2-7b-qlora)")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", metavar="KEY=VALUE",
                                                      help="override a recipe field (repeatable), e.g. max_steps=20")]
BaseOpt = Annotated[Optional[str], typer.Option("--base", help="base model: hub id, HF folder or .gguf "
                                                               "(overrides the recipe's base)")]
DataOpt = Annotated[Optional[str], typer.Option("--data", help="hub data set id, counsel-chat CSV, or CSV/JSONL "
                                                               "with Context/Response (overrides the recipe)")]
StepsOpt = Annotated[Optional[int], typer.Option("--max-steps", help="stop after this many optimizer steps")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")]


def _recipe(recipe: str, overrides: list[str] | None, base: str | None, data: str | None, max_steps: int | None):
    from training.recipe import RecipeError, load_recipe

    items = list(overrides or [])
    items += [f"base={base}"] if base else []
    items += [f"data={data}"] if data else []
    items += [f"max_steps={max_steps}"] if max_steps is not None else []
    try:
        return load_recipe(recipe, items)
    except RecipeError as e:
        typer.echo(f"recipe error: {e}", err=True)
        raise typer.Exit(2) from e


def _logging(verbose: bool) -> None:
    from bot.runtime import setup_logging

    setup_logging("DEBUG" if verbose else os.environ.get("COUNSEL_LOG_LEVEL", "INFO"))


def train(recipe: RecipeOpt = "smollm2-cpu", overrides: SetOpt = None, base: BaseOpt = None, data: DataOpt = None,
          max_steps: StepsOpt = None,
          run_dir: Annotated[Optional[Path], typer.Option(
              "--run-dir", help="default: runs/<timestamp>-<recipe>")] = None,
          verbose: VerboseOpt = False) -> None:
    """Train a LoRA/QLoRA adapter from a recipe; writes the adapter, config, metrics, loss curve and data report
    into a run directory."""
    r = _recipe(recipe, overrides, base, data, max_steps)
    _logging(verbose)
    log.info("recipe:\n%s", r.to_yaml())
    from training.train import main, summary_lines

    result = main(r, run_dir)
    typer.echo("\n".join(summary_lines(result)))


def retrain(recipe: RecipeOpt = "smollm2-cpu", overrides: SetOpt = None, base: BaseOpt = None,
            data: DataOpt = None, max_steps: StepsOpt = None,
            registry: Annotated[Optional[Path], typer.Option(
                "--registry", help="adapter registry folder (default: the shipped adapter folder of the embedded "
                                   "model, model/adapters/smollm2-counsel)")] = None,
            redis_url: Annotated[Optional[str], typer.Option(
                "--redis-url", help="tell workers here (default: COUNSEL_REDIS_URL)")] = None,
            candidate: Annotated[Optional[Path], typer.Option(
                "--candidate", help="gate and promote this adapter folder instead of training a new one")] = None,
            tolerance: Annotated[float, typer.Option(
                help="promote when perplexity is at most this fraction worse (0 = not worse at all)")] = 0.0,
            dry_run: Annotated[bool, typer.Option("--dry-run", help="show what would happen; change nothing")] = False,
            rollback: Annotated[bool, typer.Option("--rollback", help="put the previous version back in service")]
            = False,
            as_json: Annotated[bool, typer.Option("--json", help="print the outcome as one JSON object")] = False,
            verbose: VerboseOpt = False) -> None:
    """Train -> evaluate on held-out questions -> promote only if not worse -> tell workers over Redis.
    Exit status: 0 promoted / rolled back / dry run, 1 refused by the gate, 2 usage error."""
    from training.registry import RegistryError
    from training.retrain import main

    r = _recipe(recipe, overrides, base, data, max_steps)
    _logging(verbose)
    if redis_url is None:
        from bot.settings import Settings

        redis_url = Settings().redis_url
    try:
        out = main(r, registry, redis_url, candidate=candidate, tolerance=tolerance, dry_run=dry_run,
                   do_rollback=rollback)
    except (RegistryError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    typer.echo(json.dumps(out.as_dict(), default=str) if as_json else "\n".join(out.lines))
    raise typer.Exit(1 if out.action == "refused" else 0)
