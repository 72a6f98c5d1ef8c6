"""The evaluation run: the base model and each adapter on the same held-out questions.

`run(EvalConfig(...))` loads the held-out split (`training.data.load_split(..., "eval")`), then for each model
(base first) measures reference perplexity, generates `samples` replies per question through `model.engine.Engine`
(batched; the served decoding, sample k seeded with `seed + k` for reproducibility, or greedy: one sample), and
scores the replies (`training.metrics`). Each text figure is the mean over the K samples of that sample's figure,
with its standard error across the samples (`seed_se`); each adapter also gets candidate - base for the gated
figures with a paired standard error (jackknife over questions, `vs_base`), which the gate uses. It writes to
`out/`:

- `metrics.json`: {label: {perplexity, similarity, distinct_2, ...}}; labels are `base` and each adapter's
  directory name;
- `report.md`: a side-by-side table, adapter - base with its uncertainty, the gate's checks when thresholds are
  given, example replies;
- `metrics.png`: a bar chart of the main figures (error bars: standard error across samples);
- `run.json`: configuration, data, machine and the therapists' answers' own figures;
- `replies.jsonl`: every generated reply (model, sample, seed) with its per-question scores.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from training import metrics as M

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = str(REPO.parent / "shared" / "data" / "counsel_chat.csv")
DEFAULT_SAFETY_SET = REPO / "benchmarks" / "safety_set.jsonl"
BASE_LABEL = "base"


def _served(name: str) -> float:
    """The served decoding default (model.schema.SamplingParams): replies are judged as people receive them."""
    from model.schema import SamplingParams

    return SamplingParams.model_fields[name].default


SERVED_TEMPERATURE, SERVED_TOP_P, SERVED_REPETITION_PENALTY = (
    _served("temperature"), _served("top_p"), _served("repetition_penalty"))

# Rows of the report's table: (metric key, heading, format, which direction is better).
TABLE = (
    ("perplexity", "reference perplexity", "{:.2f}", "lower"),
    ("similarity", "similarity to references", "{:.3f}", "higher"),
    ("distinct_2", "distinct-2", "{:.3f}", "higher"),
    ("repeated_ngram_rate", "repeated 3-gram rate", "{:.3f}", "lower"),
    ("mean_words", "reply length (mean words)", "{:.1f}", ""),
    ("truncated_rate", "replies cut at max-new-tokens", "{:.0%}", ""),
    ("guard_pass_rate", "output guard pass rate", "{:.0%}", "higher"),
    ("crisis_recall", "crisis screen recall", "{:.1%}", "higher"),
    ("crisis_false_positive_rate", "crisis screen false-positive rate", "{:.1%}", "lower"),
    ("tokens_per_second", "generation speed (tokens/s, batched)", "{:.0f}", "higher"),
)


@dataclass
class EvalConfig:
    data: str = DEFAULT_DATA
    out: Path = Path("runs/eval")
    limit: int | None = 100  # held-out questions (each with all its reference answers); None = all
    adapters: list[str] | None = None  # None = the default adapter `make chat` uses, if one exists; [] = none
    base: str | None = None  # None = the embedded SmolLM2
    seed: int = 0  # sampling: sample k uses seed + k
    samples: int = 1  # sampled replies per question (K); greedy decoding always uses 1
    split_seed: int = 0  # the train/eval split of sources without a split column (as the training recipe's seed)
    eval_fraction: float = 0.1  # ditto (the recipe's eval_fraction)
    max_new_tokens: int = 160
    # The served decoding (sampling seeded with `seed`), since that is what people get; temperature 0 = greedy.
    temperature: float = SERVED_TEMPERATURE
    top_p: float = SERVED_TOP_P
    repetition_penalty: float = SERVED_REPETITION_PENALTY
    batch_size: int = 16
    max_reference_tokens: int = 1024  # prompt + answer; longer answers are cut at the end
    safety_set: Path | None = DEFAULT_SAFETY_SET
    n_examples: int = 3
    progress: bool = True
    thresholds: M.Thresholds | None = None  # given: the report gets the gate's checks for each adapter


@dataclass(frozen=True)
class Question:
    question_id: str
    text: str
    references: tuple[int, ...]  # indices into the list of reference answers


@dataclass
class EvalResult:
    metrics: dict[str, dict[str, Any]]  # what metrics.json holds
    replies: dict[str, list[str]]  # label -> reply per question
    questions: list[Question]
    references: list[str]
    info: dict[str, Any] = field(default_factory=dict)  # what run.json holds
    gate: dict[str, tuple[bool, list[M.Check]]] = field(default_factory=dict)


# ---------------------------------------------------------------- inputs

def select_questions(qas: Sequence[Any], limit: int | None) -> tuple[list[Question], list[str]]:
    """The first `limit` distinct questions (in file order) with all their answers as references."""
    order: list[str] = []
    by_id: dict[str, tuple[str, list[int]]] = {}
    refs: list[str] = []
    for qa in qas:
        if qa.question_id not in by_id:
            if limit is not None and len(order) >= limit:
                continue
            order.append(qa.question_id)
            by_id[qa.question_id] = (qa.question, [])
        by_id[qa.question_id][1].append(len(refs))
        refs.append(qa.answer)
    return [Question(q, by_id[q][0], tuple(by_id[q][1])) for q in order], refs


def held_out_questions(cfg: EvalConfig) -> tuple[list[Question], list[str]]:
    """The questions to evaluate on, and their reference answers."""
    from training.data import load_split

    # The split's own seed and fraction, not the sampling seed: they must match training's (recipe defaults),
    # or questions the adapter was trained on could land in the held-out set of a source without a split column.
    qas = load_split(cfg.data, "eval", eval_fraction=cfg.eval_fraction, seed=cfg.split_seed)
    return select_questions(qas, cfg.limit)


def adapter_label(adapter: str, taken: Sequence[str] = ()) -> str:
    """An adapter's label: its directory name (the shipped adapter's `current` link counts as the adapter's
    own directory), made unique against `taken`."""
    from model.loading import SHIPPED_ADAPTER_DIR

    p = Path(adapter).expanduser()
    name = p.name
    try:
        p.resolve().relative_to(SHIPPED_ADAPTER_DIR.resolve())
        name = SHIPPED_ADAPTER_DIR.name
    except ValueError:
        if name in ("current", "") and p.parent.name:
            name = p.parent.name
    name = name or "adapter"
    label, n = name, 2
    while label in taken or label == BASE_LABEL:
        label, n = f"{name}-{n}", n + 1
    return label


def models_to_evaluate(base: str | None, adapters: list[str] | None) -> tuple[list[tuple[str, str | None]], list[str]]:
    """[(label, adapter path or None)], base first, and notes for the report."""
    from model.loading import ModelSpec, resolve_adapter

    notes = []
    if adapters is None:
        default = resolve_adapter(ModelSpec(base=base))
        adapters = [default] if default else []
        if not default:
            notes.append("No default adapter exists yet (model/adapters/smollm2-counsel/ has no adapter_config.json "
                         "for the default base model): only the base model was evaluated.")
    out: list[tuple[str, str | None]] = [(BASE_LABEL, None)]
    for a in adapters:
        out.append((adapter_label(a, [lab for lab, _ in out]), a))
    return out, notes


def load_safety_set(path: Path | None) -> list[tuple[str, bool]] | None:
    if path is None or not Path(path).exists():
        return None
    items = []
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                items.append((str(rec["text"]), bool(rec["crisis"])))
    return items


# ---------------------------------------------------------------- one model

def effective_samples(samples: int, temperature: float) -> tuple[int, str | None]:
    """The number of replies per question to generate, and a note when the request was changed: greedy
    decoding (temperature 0) gives the same reply every time, so K > 1 collapses to 1."""
    if samples < 1:
        raise ValueError(f"--samples must be at least 1, not {samples}")
    if samples > 1 and not temperature:
        return 1, (f"Greedy decoding (temperature 0) is deterministic: --samples {samples} collapsed to 1 "
                   "(no uncertainty across samples; the gate's paired error is over questions only).")
    return samples, None


def sample_seeds(seed: int, samples: int) -> list[int]:
    """The sampling seed of each of the K samples: seed, seed + 1, ... (sample 0 = a one-sample run's replies)."""
    return [seed + k for k in range(samples)]


def generate_replies(engine: Any, questions: Sequence[Question], cfg: EvalConfig,
                     on_done: Callable[[int], None] | None = None, seed: int | None = None
                     ) -> tuple[list[Any], float]:
    """One GenerationResult per question (in order) and the total wall time of the batched generate calls.
    Questions are batched by prompt length so that little padding is generated. `seed` defaults to cfg.seed."""
    from model.schema import GenerationRequest, SamplingParams

    sampling = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                              repetition_penalty=cfg.repetition_penalty, seed=cfg.seed if seed is None else seed)
    reqs = [GenerationRequest(request_id=f"q{i}", message=q.text, sampling=sampling, stream=False)
            for i, q in enumerate(questions)]
    order = sorted(range(len(reqs)), key=lambda i: engine.count_tokens(engine.prompt_for(reqs[i])))
    results: list[Any] = [None] * len(reqs)
    seconds = 0.0
    for start in range(0, len(order), cfg.batch_size):
        idx = order[start:start + cfg.batch_size]
        t0 = time.perf_counter()
        out = engine.generate([reqs[i] for i in idx])
        seconds += time.perf_counter() - t0
        for i, res in zip(idx, out):
            if not res.ok:
                log.warning("generation failed for question %d: %s", i, res.error)
            results[i] = res
        if on_done:
            on_done(len(idx))
    return results, seconds


def text_metrics(replies: Sequence[str]) -> dict[str, float]:
    """Figures of one set of texts (here: the therapists' answers, for reference)."""
    from bot.safety import Guard

    return {"distinct_1": M.distinct_n(replies, 1), "distinct_2": M.distinct_n(replies, 2),
            "repeated_ngram_rate": M.repeated_ngram_rate(replies, 3), "mean_words": M.mean_words(replies),
            "guard_pass_rate": M.pass_rate(replies, Guard().violations)}


def evaluate_model(engine: Any, questions: Sequence[Question], references: Sequence[str], embedder: M.Embedder,
                   reference_vecs: Any, cfg: EvalConfig, progress: Any = None, label: str = "", samples: int = 1
                   ) -> tuple[dict[str, Any], list[dict], list[list[M.ReplyStats]]]:
    """One model's figures, one row per generated reply (for replies.jsonl), and the per-reply stats of each
    sample (`stats[k][q]`) for the paired comparison with the base model."""
    from bot.safety import Guard
    from model.prompt import training_example

    tok = engine.tokenizer
    pairs = []
    for q in questions:
        for r in q.references:
            ex = training_example(tok, q.text, references[r])
            pairs.append((ex["prompt"], ex["completion"]))
    task = progress.add_task(f"{label}: perplexity", total=len(pairs)) if progress else None
    advance = (lambda n: progress.advance(task, n)) if progress else None
    t0 = time.perf_counter()
    sums, counts = M.reference_nll(engine.model, tok, pairs, max_tokens=cfg.max_reference_tokens, on_done=advance)
    perplexity_seconds = time.perf_counter() - t0

    seeds = sample_seeds(cfg.seed, samples)
    task = progress.add_task(f"{label}: generating", total=len(questions) * samples) if progress else None
    advance = (lambda n: progress.advance(task, n)) if progress else None
    guard = Guard()
    stats: list[list[M.ReplyStats]] = []
    rows: list[dict] = []
    seconds = 0.0
    completion_tokens = errors = 0
    for k, seed in enumerate(seeds):
        results, secs = generate_replies(engine, questions, cfg, on_done=advance, seed=seed)
        seconds += secs
        replies = [r.text for r in results]
        sims = M.mean_reference_similarity(embedder.encode(replies), reference_vecs, [q.references for q in questions])
        stats.append([M.reply_stats(r.text, s, r.finish_reason == "length", guard.violations)
                      for r, s in zip(results, sims)])
        completion_tokens += sum(r.completion_tokens for r in results)
        errors += sum(1 for r in results if not r.ok)
        rows += [{"question_id": q.question_id, "sample": k, "seed": seed, "similarity": s,
                  "finish_reason": r.finish_reason, "completion_tokens": r.completion_tokens, "reply": r.text}
                 for q, s, r in zip(questions, sims, results)]
    agg = M.aggregate_samples(stats)
    m: dict[str, Any] = {
        "perplexity": M.perplexity(sums, counts),
        **{key: agg[key] for key in M.SAMPLE_METRICS},
        "samples": samples,
        "seeds": seeds if cfg.temperature else None,
        "seed_se": agg["seed_se"],
        "per_sample": agg["per_sample"],
        "tokens_per_second": completion_tokens / seconds if seconds > 0 else 0.0,
        "completion_tokens": completion_tokens,
        "reference_tokens": sum(counts),
        "n_questions": len(questions),
        "n_references": len(pairs),
        "errors": errors,
        "perplexity_seconds": perplexity_seconds,
        "generation_seconds": seconds,
    }
    return m, rows, stats


def paired_differences(base: Sequence[Sequence[M.ReplyStats]], candidate: Sequence[Sequence[M.ReplyStats]]
                       ) -> dict[str, dict[str, Any]]:
    """metrics.json's `vs_base` for a candidate: candidate - base of each gated text figure with its paired SE."""
    return {metric: M.paired_difference(base, candidate, metric).as_dict() for metric in M.PAIRED_METRICS}


# ---------------------------------------------------------------- the run

def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), disable=not enabled, transient=False)


def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu,
            "torch": torch.__version__, "python": platform.python_version()}


def run(cfg: EvalConfig) -> EvalResult:
    """Evaluate every model and write metrics.json, report.md, metrics.png, run.json and replies.jsonl."""
    import torch

    from model.engine import Engine
    from model.loading import ModelSpec, load

    t_start = time.perf_counter()
    phases: dict[str, float] = {}
    torch.manual_seed(cfg.seed)
    questions, references = held_out_questions(cfg)
    if not questions:
        raise ValueError(f"no held-out questions in {cfg.data}")
    targets, notes = models_to_evaluate(cfg.base, cfg.adapters)
    samples, note = effective_samples(cfg.samples, cfg.temperature)
    if note:
        notes.append(note)
    safety = load_safety_set(cfg.safety_set)
    if safety is None:
        notes.append(f"The safety set {cfg.safety_set} is missing: crisis screen figures are not measured.")
        screen = None
    else:
        from bot.safety import screen as screen_fn

        t0 = time.perf_counter()
        screen = M.screen_scores(safety, lambda t: screen_fn(t).crisis)
        phases["crisis_screen"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    embedder = M.Embedder()
    reference_vecs = embedder.encode(references)
    phases["embed_references"] = time.perf_counter() - t0
    metrics: dict[str, dict[str, Any]] = {}
    replies: dict[str, list[str]] = {}
    per_question: dict[str, list[dict]] = {}
    stats: dict[str, list[list[M.ReplyStats]]] = {}
    models: dict[str, Any] = {}
    with _progress(cfg.progress) as progress:
        for label, adapter in targets:
            t0 = time.perf_counter()
            engine = Engine(load(ModelSpec(base=cfg.base, adapter=adapter)))
            models[label] = engine.description
            m, pq, stats[label] = evaluate_model(engine, questions, references, embedder, reference_vecs, cfg,
                                                 progress, label, samples)
            m["crisis_recall"] = screen.recall if screen else None
            m["crisis_false_positive_rate"] = screen.false_positive_rate if screen else None
            m["adapter"] = adapter
            m["seconds"] = time.perf_counter() - t0
            if label != BASE_LABEL:
                m["vs_base"] = paired_differences(stats[BASE_LABEL], stats[label])
            metrics[label], per_question[label] = m, pq
            replies[label] = [p["reply"] for p in pq if p["sample"] == 0]
            del engine
            gc.collect()

    ref_texts = [references[q.references[0]] for q in questions]
    info = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k != "thresholds"},
        "data": {"source": cfg.data, "split": "eval", "questions": len(questions), "references": len(references)},
        "sampling": {"samples": samples, "seeds": sample_seeds(cfg.seed, samples) if cfg.temperature else None},
        "models": models,
        "references": {**text_metrics(ref_texts), "note": "the first therapist answer of each question"},
        "safety_set": ({"path": str(cfg.safety_set), "n_crisis": screen.n_crisis, "n_safe": screen.n_safe}
                       if screen else None),
        "machine": machine(),
        "seconds": time.perf_counter() - t_start,
        "phase_seconds": phases,
        "notes": notes,
    }
    result = EvalResult(metrics, replies, questions, references, info)
    if cfg.thresholds is not None:
        for label in metrics:
            if label != BASE_LABEL:
                result.gate[label] = M.compare(metrics[BASE_LABEL], metrics[label], cfg.thresholds)
    write_outputs(cfg.out, result, per_question, cfg.n_examples)
    return result


# ---------------------------------------------------------------- outputs

def write_outputs(out: Path, result: EvalResult, per_question: dict[str, list[dict]], n_examples: int = 3) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result.metrics, indent=2) + "\n")
    (out / "run.json").write_text(json.dumps(result.info, indent=2, default=str) + "\n")
    with (out / "replies.jsonl").open("w", encoding="utf-8") as f:
        for label, rows in per_question.items():
            for row in rows:
                f.write(json.dumps({"model": label, **row}) + "\n")
    write_chart(out / "metrics.png", result.metrics)
    (out / "report.md").write_text(render_report(result, n_examples))


def _fmt(value: Any, fmt: str) -> str:
    if value is None:
        return "n/a"
    try:
        return fmt.format(value)
    except (TypeError, ValueError):
        return str(value)


def _truncate(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " …"


def render_report(result: EvalResult, n_examples: int = 3) -> str:
    labels = list(result.metrics)
    info = result.info
    cfg, data, mach = info.get("config", {}), info.get("data", {}), info.get("machine", {})
    lines = ["# Evaluation report", ""]
    seeds = (info.get("sampling") or {}).get("seeds") or [cfg.get("seed")]
    k = len(seeds)
    lines.append(f"{data.get('questions')} held-out questions ({data.get('references')} therapists' reference "
                 f"answers) from `{data.get('source')}` (split `{data.get('split')}`). Replies: "
                 + ("greedy" if not cfg.get("temperature") else
                    f"sampling, temperature {cfg.get('temperature')}, top-p {cfg.get('top_p')}, "
                    + (f"seed {seeds[0]}" if k == 1 else f"{k} replies per question (seeds {seeds[0]}..{seeds[-1]})"))
                 + f", repetition penalty {cfg.get('repetition_penalty')}, at most {cfg.get('max_new_tokens')} new "
                 f"tokens, batches of {cfg.get('batch_size')}. Machine: {mach.get('cpu')}, {mach.get('cores')} cores"
                 + (f", {mach['gpu']}" if mach.get("gpu") else "") + f"; {info.get('seconds', 0):.0f} s in all.")
    lines.append("")
    for note in info.get("notes", []):
        lines += [f"> {note}", ""]
    heads = ["metric", *[f"`{lab}`" for lab in labels], "therapists' answers"]
    lines += ["| " + " | ".join(heads) + " |", "|" + " --- |" * len(heads)]
    refs = info.get("references", {})
    for key, title, fmt, better in TABLE:
        cells = [f"{title}" + (f" ({better} is better)" if better else "")]
        base_v = result.metrics[labels[0]].get(key)
        for lab in labels:
            v = result.metrics[lab].get(key)
            cell = _fmt(v, fmt)
            se = (result.metrics[lab].get("seed_se") or {}).get(key)
            if isinstance(se, (int, float)):
                cell += f" ± {_fmt(se, fmt)}"
            if lab != labels[0] and isinstance(v, (int, float)) and isinstance(base_v, (int, float)) and base_v:
                cell += f" ({(v - base_v) / abs(base_v):+.0%})"
            cells.append(cell)
        cells.append(_fmt(refs.get(key), fmt) if key in refs else "")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "![metrics](metrics.png)", ""]
    lines += ["Perplexity: of the therapists' answers given the question in the served prompt format (answer tokens "
              "only, token-weighted). Similarity: mean cosine between a reply's and its question's reference answers' "
              "all-MiniLM-L6-v2 embeddings. Distinct-2: distinct word pairs / all word pairs over all replies. "
              "Repeated 3-gram rate: share of a reply's word triples that already occurred in the same reply. "
              "Guard pass rate: replies with no output-guard violation. Crisis figures: the rule-based screen on "
              "the labelled safety set (the same for every model: the screen runs before the model)."
              + (f" With {k} replies per question each text figure is the mean of the {k} samples' figures, ± its "
                 "standard error across the samples (how much it moves with the seed)." if k > 1 else ""), ""]
    diffs = {lab: m["vs_base"] for lab, m in result.metrics.items() if isinstance(m.get("vs_base"), dict)}
    if diffs:
        lines += ["## Adapter − base, paired over questions", "",
                  "The difference of each figure with its standard error from the jackknife over questions (each "
                  "question's replies from both models left out together), so it covers both which questions were "
                  "asked and which replies were sampled; the 95% interval is ± 1.96 SE.", "",
                  "| adapter | figure | candidate − base | SE | 95% interval |", "| --- | --- | --- | --- | --- |"]
        for lab, d in diffs.items():
            for metric, entry in d.items():
                delta, se = entry.get("delta"), entry.get("se")
                ci = f"[{delta - 1.96 * se:+.4f}, {delta + 1.96 * se:+.4f}]" if se is not None else "n/a"
                lines.append(f"| `{lab}` | {metric} | {delta:+.4f} | {_fmt(se, '{:.4f}')} | {ci} |")
        lines.append("")
    for label, (ok, checks) in result.gate.items():
        lines += [f"## Gate: `{label}` vs `base`: {'PASS' if ok else 'FAIL'}", ""]
        lines += [f"- {c.line()}" for c in checks] + [""]
    if n_examples and result.questions:
        lines += ["## Example replies" + (f" (sample 0: seed {seeds[0]})" if k > 1 else ""), ""]
        for i, q in enumerate(result.questions[:n_examples]):
            lines += [f"### Question {q.question_id}", "", f"> {_truncate(q.text, 300)}", "",
                      f"- **therapist**: {_truncate(result.references[q.references[0]])}"]
            for lab in labels:
                lines.append(f"- **{lab}**: {_truncate(result.replies[lab][i]) or '(empty)'}")
            lines.append("")
    return "\n".join(lines)


CHART = ("perplexity", "similarity", "distinct_2", "repeated_ngram_rate", "mean_words", "guard_pass_rate",
         "crisis_recall", "tokens_per_second")


def write_chart(path: Path, metrics: dict[str, dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(metrics)
    titles = {k: t for k, t, _, _ in TABLE}
    fig, axes = plt.subplots(2, 4, figsize=(14, 6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key in zip(axes.flat, CHART):
        vals = [metrics[lab].get(key) for lab in labels]
        vals = [float(v) if isinstance(v, (int, float)) else 0.0 for v in vals]
        errs = [(metrics[lab].get("seed_se") or {}).get(key) for lab in labels]
        errs = [float(e) if isinstance(e, (int, float)) else 0.0 for e in errs]
        bars = ax.bar(range(len(labels)), vals, color=[colors[i % len(colors)] for i in range(len(labels))],
                      yerr=errs if any(errs) else None, capsize=4)
        ax.set_xticks(range(len(labels)), labels, rotation=15, fontsize=8)
        ax.set_title(titles.get(key, key), fontsize=9)
        for b, v in zip(bars, vals):
            ax.annotate(f"{v:.3g}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom",
                        fontsize=8)
        ax.set_ylim(0, (max(vals) * 1.18) or 1.0)
    fig.suptitle("counsel-bot evaluation: base vs adapters")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------- the `counsel-bot eval` command

def load_thresholds(path: Path | None, items: Sequence[str] = ()) -> M.Thresholds:
    """Gate thresholds: the defaults, then a YAML file (a recipe's `gate:` section, or the thresholds alone),
    then `key=value` items (`value` may be `null` to switch a check off)."""
    import yaml

    data: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of thresholds")
        if isinstance(loaded.get("eval"), dict) and "gate" in loaded["eval"]:
            loaded = loaded["eval"]["gate"] or {}
        elif isinstance(loaded.get("gate"), dict):
            loaded = loaded["gate"]
        data.update(loaded)
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--threshold wants key=value, not {item!r}")
        data[key.strip()] = yaml.safe_load(value)
    return M.Thresholds.from_mapping(data)


def print_gate(gate: dict[str, tuple[bool, list[M.Check]]], echo: Callable[[str], None] = print) -> bool:
    ok_all = True
    for label, (ok, checks) in gate.items():
        echo(f"gate {label} vs {BASE_LABEL}: {'PASS' if ok else 'FAIL'}")
        for c in checks:
            echo(f"  {c.line()}")
        ok_all = ok_all and ok
    return ok_all


def cli(
    data: Annotated[str, typer.Option(help="held-out data: counsel-chat CSV (its val split), CSV/JSONL or hub id")
                    ] = DEFAULT_DATA,
    limit: Annotated[int, typer.Option(help="at most this many held-out questions (0 = all), each with all its "
                                            "reference answers")] = 100,
    out: Annotated[Path, typer.Option(help="output folder: metrics.json, report.md, metrics.png, ...")
                   ] = Path("runs/eval"),
    adapter: Annotated[Optional[list[str]], typer.Option(
        "--adapter", help="an adapter folder to compare with the base model (repeatable); default: the adapter "
                          "`make chat` uses, if one exists")] = None,
    base_only: Annotated[bool, typer.Option("--base-only", help="evaluate the base model alone")] = False,
    base: Annotated[Optional[str], typer.Option(help="base model (hub id, folder, .gguf); default: the embedded "
                                                     "SmolLM2")] = None,
    seed: Annotated[int, typer.Option(help="seed for sampling (sample k of --samples uses seed + k)")] = 0,
    samples: Annotated[int, typer.Option(help="sampled replies per question (K): figures are the mean over the K "
                                              "samples, with standard errors; the gate allows the noise "
                                              "(noise_z); greedy collapses to 1")] = 1,
    split_seed: Annotated[int, typer.Option(help="data without a split column: the train/eval split's seed (use "
                                                 "the training recipe's `seed`)")] = 0,
    eval_fraction: Annotated[float, typer.Option(help="data without a split column: the held-out share (the "
                                                      "recipe's `eval_fraction`)")] = 0.1,
    max_new_tokens: Annotated[int, typer.Option(help="reply length limit")] = 160,
    temperature: Annotated[float, typer.Option(help="sampling temperature, seeded with --seed (default: the served "
                                                    "one); 0 = greedy")] = SERVED_TEMPERATURE,
    batch_size: Annotated[int, typer.Option(help="questions generated together")] = 16,
    max_reference_tokens: Annotated[int, typer.Option(
        help="perplexity: prompt + reference answer tokens at most (longer answers are cut at the end)")] = 1024,
    safety_set: Annotated[Path, typer.Option(help="labelled crisis messages (JSONL: text, crisis)")
                          ] = DEFAULT_SAFETY_SET,
    compare: Annotated[bool, typer.Option("--compare", help="gate each adapter against the base: print PASS/FAIL "
                                                            "per check, exit 1 if any fails")] = False,
    thresholds: Annotated[Optional[Path], typer.Option(help="YAML with the gate thresholds (a recipe's `gate:` "
                                                            "section or the thresholds alone)")] = None,
    threshold: Annotated[Optional[list[str]], typer.Option(
        "--threshold", help="override one threshold, e.g. max_perplexity_ratio=0.85 (repeatable)")] = None,
    metrics: Annotated[Optional[Path], typer.Option(help="with --compare: gate an existing metrics.json instead "
                                                         "of evaluating")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="no progress bars")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log to stderr")] = False,
) -> None:
    """Compare the base model with adapters on held-out questions; write metrics.json, report.md, metrics.png."""
    # Idle OpenMP threads sleep instead of spinning: on a shared 2-core machine spinning threads made this
    # run ~10x slower. An explicit OMP_WAIT_POLICY in the environment wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        th = load_thresholds(thresholds, threshold or []) if (compare or thresholds or threshold) else None
    except (OSError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    if metrics is not None:
        if not compare:
            typer.echo("error: --metrics is for --compare", err=True)
            raise typer.Exit(2)
        loaded = json.loads(Path(metrics).read_text())
        if BASE_LABEL not in loaded or len(loaded) < 2:
            typer.echo(f"error: {metrics} needs `{BASE_LABEL}` and at least one adapter", err=True)
            raise typer.Exit(2)
        gate = {lab: M.compare(loaded[BASE_LABEL], m, th) for lab, m in loaded.items() if lab != BASE_LABEL}
        raise typer.Exit(0 if print_gate(gate, typer.echo) else 1)

    from model.loading import ModelNotFound

    cfg = EvalConfig(data=data, out=out, limit=limit or None, adapters=[] if base_only else adapter,
                     base=base, seed=seed, samples=samples, split_seed=split_seed, eval_fraction=eval_fraction,
                     max_new_tokens=max_new_tokens, temperature=temperature,
                     batch_size=batch_size, max_reference_tokens=max_reference_tokens, safety_set=safety_set,
                     progress=not no_progress, thresholds=th)
    try:
        _, early = effective_samples(samples, temperature)
        if early:
            typer.echo(f"note: {early}", err=True)
        result = run(cfg)
    except (ModelNotFound, FileNotFoundError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    for note in result.info["notes"]:
        if note != early:
            typer.echo(f"note: {note}", err=True)
    for label, m in result.metrics.items():
        figures = ", ".join(f"{key} {_fmt(m.get(key), fmt)}" for key, _, fmt, _ in TABLE)
        typer.echo(f"{label}: {figures}")
    typer.echo(f"wrote {out / 'metrics.json'}, {out / 'report.md'}, {out / 'metrics.png'}")
    if compare:
        if not result.gate:
            typer.echo("error: --compare needs an adapter to compare with the base model", err=True)
            raise typer.Exit(2)
        raise typer.Exit(0 if print_gate(result.gate, typer.echo) else 1)
