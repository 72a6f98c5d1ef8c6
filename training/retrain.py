"""The admins' retrain script: train -> evaluate on held-out questions -> gate -> promote -> tell the workers.

    counsel-bot retrain --recipe smollm2-cpu                     # the whole pipeline
    counsel-bot retrain --recipe smollm2-cpu --dry-run           # what it would do; trains and writes nothing
    counsel-bot retrain --candidate runs/<run>/adapter           # gate + promote an adapter trained elsewhere
    counsel-bot retrain --rollback                               # put the previous version back in service
    python -m training.retrain ...                               # the same

The candidate is promoted only if the perplexity of held-out reference answers is not worse than with the adapter
in service (or the base model when none is) and, when the recipe has a `gate:` section, if `counsel-bot eval
--compare` passes it against the base model (similarity, distinct-2, guard and crisis figures, perplexity bar),
with the recipe's `gate_samples` sampled replies per question. Promotion copies it into `<registry>/vNNNN/`, swaps the
`current` symlink atomically, then `SET`s `counsel:adapter:current` and `PUBLISH`es the path on `counsel:adapter:reload`,
so running workers reload between batches.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from training.gate import Decision, decide, score_adapter
from training.recipe import Recipe, resolve_data
from training.registry import ROOT_LABEL, AdapterRegistry, notify_workers

log = logging.getLogger(__name__)


def default_registry(recipe: Recipe) -> Path:
    """The shipped adapter folder for the embedded default model; other bases have no default."""
    from model.loading import SHIPPED_ADAPTER_DIR

    if recipe.base is None:
        return SHIPPED_ADAPTER_DIR
    raise ValueError("--registry is required when the recipe's base is not the embedded default model")


@dataclass
class Outcome:
    action: str  # "promoted" | "refused" | "rolled back" | "dry run"
    lines: list[str] = field(default_factory=list)
    version: str | None = None
    adapter_path: Path | None = None
    decision: Decision | None = None
    notified: int | None = None  # Redis subscribers that received the reload message
    run_dir: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "version": self.version,
                "adapter_path": str(self.adapter_path) if self.adapter_path else None,
                "decision": self.decision.as_dict() if self.decision else None, "notified": self.notified,
                "run_dir": str(self.run_dir) if self.run_dir else None, "lines": self.lines}


def _notify(redis_url: str | None, path: Path, out: Outcome) -> None:
    if not redis_url:
        out.lines.append("no Redis configured (COUNSEL_REDIS_URL / --redis-url): workers pick the adapter up from "
                         "`current` when they next start")
        return
    out.notified = notify_workers(redis_url, path)
    out.lines.append(f"told workers over Redis: {path} ({out.notified} subscriber(s) listening)")


def rollback(registry: AdapterRegistry, redis_url: str | None, dry_run: bool = False) -> Outcome:
    target = registry.rollback_target()
    current = registry.current_label()
    path = registry.path_of(target)
    if dry_run:
        return Outcome("dry run", [f"would roll back {registry.root}: {current} -> {target} ({path})",
                                   "would notify workers over Redis" if redis_url else "no Redis configured"])
    registry.rollback()
    out = Outcome("rolled back", [f"rolled back {registry.root}: {current} -> {target}"], version=target,
                  adapter_path=path)
    _notify(redis_url, path, out)
    return out


def plan(recipe: Recipe, registry: AdapterRegistry, candidate: Path | None, redis_url: str | None,
         tolerance: float) -> Outcome:
    current = registry.current_label()
    against = f"{current} ({registry.current_path()})" if current else "the base model (no adapter in service)"
    lines = [
        f"recipe   : {recipe.name} (base {recipe.base or 'embedded SmolLM2'}, 4-bit {recipe.load_in_4bit}, "
        f"steps {recipe.max_steps if recipe.max_steps > 0 else f'{recipe.num_train_epochs} epochs'})",
        f"data     : {resolve_data(recipe.data)} (held-out split, up to {recipe.eval_limit or 'all'} answers)",
        f"candidate: {candidate if candidate else f'would train a new adapter into {recipe.output_root}/<timestamp>'}",
        f"compare  : with {against} on held-out answers; promote if perplexity is at most {1 + tolerance:.3f}x",
        (f"quality  : then `counsel-bot eval --compare` against the base model on {recipe.gate_questions} "
         f"held-out questions x {recipe.gate_samples} sampled replies "
         f"(thresholds: {recipe.gate or 'the default bar'})") if recipe.gate is not None else
        "quality  : no quality gate in this recipe (perplexity only)",
        f"promote  : would copy to {registry.root / registry.next_version()} and point "
        f"{registry.root / 'current'} at it",
        f"notify   : {'PUBLISH on Redis ' + redis_url if redis_url else 'no Redis configured'}",
    ]
    return Outcome("dry run", lines)


def quality_gate(recipe: Recipe, candidate: Path, run_dir: Path | None) -> tuple[bool, list[str], dict[str, Any]]:
    """`counsel-bot eval --compare` for the candidate against the base model, with the recipe's thresholds:
    (passed, one line per check, what gate.json records). The report goes to <run dir>/eval (or a fresh
    runs/gate-<time> folder for a candidate trained elsewhere)."""
    import time

    from training import metrics as M
    from training.evaluate import EvalConfig, run

    thresholds = M.Thresholds.from_mapping(recipe.gate)
    out = (run_dir / "eval") if run_dir is not None else \
        Path(recipe.output_root) / time.strftime("gate-%Y%m%dT%H%M%SZ", time.gmtime())
    result = run(EvalConfig(data=resolve_data(recipe.data), out=out, limit=recipe.gate_questions,
                            adapters=[str(candidate)], base=recipe.base, split_seed=recipe.seed,
                            samples=recipe.gate_samples,
                            eval_fraction=recipe.eval_fraction, thresholds=thresholds, progress=False))
    label = next(k for k in result.metrics if k != "base")
    passed, checks = result.gate[label]
    lines = [f"quality gate vs the base model ({recipe.gate_questions} held-out questions x {recipe.gate_samples} "
             f"replies, report {out}/report.md): "
             + ("PASS" if passed else "FAIL")]
    lines += [f"  {c.line()}" for c in checks]
    return passed, lines, {"passed": passed, "report": str(out), "checks": [asdict(c) for c in checks]}


def gate_and_promote(recipe: Recipe, registry: AdapterRegistry, candidate: Path, redis_url: str | None,
                     tolerance: float = 0.0, run_dir: Path | None = None) -> Outcome:
    from training.data import load_split

    rows = load_split(resolve_data(recipe.data), "eval", recipe.eval_fraction, recipe.seed, recipe.data_limit)
    if recipe.eval_limit is not None:
        rows = rows[:recipe.eval_limit]
    current_path = registry.current_path()
    current_label = registry.current_label() or "base"
    kw = dict(base=recipe.base, load_in_4bit=recipe.load_in_4bit, max_tokens=recipe.max_length)
    current = score_adapter(current_label, str(current_path) if current_path else None, rows, **kw)
    cand = score_adapter("candidate", str(candidate), rows, **kw)
    decision = decide(cand, current, tolerance)
    record: dict[str, Any] = decision.as_dict()
    quality_lines: list[str] = []
    if decision.promote and recipe.gate is not None:
        passed, quality_lines, record["quality_gate"] = quality_gate(recipe, candidate, run_dir)
        if not passed:
            decision = replace(decision, promote=False, reason="the quality gate failed against the base model")
            record.update(promote=False, reason=decision.reason)
    gate_json = json.dumps(record, indent=2, default=str)
    if run_dir is not None:
        (run_dir / "gate.json").write_text(gate_json)
    if not decision.promote:
        return Outcome("refused", [f"refused: {decision.reason}", *quality_lines, f"{current_label} stays in service"],
                       decision=decision, run_dir=run_dir)
    version = registry.promote(candidate, extra_files={"gate.json": gate_json})
    path = registry.path_of(version)
    out = Outcome("promoted", [f"promoted: {decision.reason}", *quality_lines,
                               f"{path} is now {registry.root / 'current'}"],
                  version=version, adapter_path=path, decision=decision, run_dir=run_dir)
    _notify(redis_url, path, out)
    return out


def main(recipe: Recipe, registry_dir: Path | None = None, redis_url: str | None = None, *,
         candidate: Path | None = None, tolerance: float = 0.0, dry_run: bool = False,
         do_rollback: bool = False) -> Outcome:
    registry = AdapterRegistry(registry_dir or default_registry(recipe))
    if do_rollback:
        return rollback(registry, redis_url, dry_run)
    if dry_run:
        return plan(recipe, registry, candidate, redis_url, tolerance)

    # 1. train (unless an adapter trained elsewhere is given)
    run_dir = None
    if candidate is None:
        from training import train

        result = train.main(recipe)
        candidate, run_dir = result.adapter_dir, result.run_dir

    # 2-4. evaluate both on the held-out split, decide, promote and notify
    out = gate_and_promote(recipe, registry, Path(candidate), redis_url, tolerance, run_dir)
    if run_dir is not None:
        (run_dir / "retrain.json").write_text(json.dumps(out.as_dict(), indent=2, default=str))
    return out


__all__ = ["main", "rollback", "plan", "gate_and_promote", "Outcome", "ROOT_LABEL"]

if __name__ == "__main__":
    import sys

    from bot.cli import app

    app(["retrain", *sys.argv[1:]])
