"""The prompt format: one pure module shared by training, evaluation and serving.

Turns (system prompt, history, user message) into the model's input text with the tokenizer's own chat template.
Llama 2 tokenizers that lack a template get the Llama 2 chat format. User text can never forge role markers or
special tokens: `neutralize` rewrites them before rendering.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from model.schema import Turn

SYSTEM_PROMPT = (
    "You are Counsel, a supportive listener in a mental-health support chat. You are an AI assistant, not a "
    "human, not a therapist, doctor or emergency service. Listen closely, reflect what the person shares, and "
    "answer with warmth and without judgment, in plain language and a few short paragraphs. Offer gentle, "
    "practical coping ideas and ask an open question when it helps. Never diagnose, never name or dose "
    "medications, and never invent phone numbers or links. Encourage the person to talk to a licensed "
    "professional or someone they trust, and if they may be in danger, urge them to contact local emergency "
    "services or a crisis line right away."
)

CAREFUL_ADDENDUM = (
    " Earlier in this conversation the person said something that suggested they might be in danger. Be "
    "especially gentle, check in on their safety, and remind them that crisis lines and emergency services are "
    "there for them right now."
)

# The Llama 2 chat format, as in meta-llama/Llama-2-7b-chat-hf's tokenizer_config.json.
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)

# Markers of the chat formats we know, whether or not the tokenizer treats them as special tokens.
_KNOWN_MARKERS = (
    "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", "<s>", "</s>", "<unk>", "<pad>",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|begin_of_text|>", "<|end_of_text|>",
    "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|system|>", "<|user|>", "<|assistant|>",
)
_LOOKALIKE = str.maketrans({"<": "‹", ">": "›", "[": "(", "]": ")", "|": "¦"})


class ChatTokenizer(Protocol):
    chat_template: Any
    all_special_tokens: list[str]

    def apply_chat_template(self, conversation: Any, **kw: Any) -> Any: ...


def _marker_pattern(extra: Sequence[str]) -> re.Pattern[str]:
    markers = sorted({m for m in (*_KNOWN_MARKERS, *extra) if m and m.strip()}, key=len, reverse=True)
    return re.compile("|".join(re.escape(m) for m in markers), re.IGNORECASE)


_DEFAULT_PATTERN = _marker_pattern(())


def neutralize(text: str, special_tokens: Sequence[str] = ()) -> str:
    """Rewrite role markers and special tokens in untrusted text into look-alikes that tokenize as plain text."""
    pattern = _marker_pattern(special_tokens) if special_tokens else _DEFAULT_PATTERN
    return pattern.sub(lambda m: m.group(0).translate(_LOOKALIKE), text)


def special_tokens_of(tokenizer: Any) -> list[str]:
    tokens = list(getattr(tokenizer, "all_special_tokens", []) or [])
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    tokens += [str(t) for t in added.values()]
    return tokens


def ensure_chat_template(tokenizer: Any) -> None:
    """Give tokenizers without a chat template the Llama 2 chat format (the format Llama 2 chat was tuned on)."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = LLAMA2_CHAT_TEMPLATE


def system_prompt_for(system_prompt: str | None = None, careful: bool = False) -> str:
    text = system_prompt if system_prompt is not None else SYSTEM_PROMPT
    return text + (CAREFUL_ADDENDUM if careful else "")


def to_messages(system: str, history: Sequence[Turn], message: str, special: Sequence[str] = ()) -> list[dict]:
    """Messages for the chat template: system first, history (alternating, user first), the current message."""
    msgs = [{"role": "system", "content": neutralize(system, special)}]
    turns = _alternating(history)
    msgs += [{"role": t.role, "content": neutralize(t.content, special)} for t in turns]
    msgs.append({"role": "user", "content": neutralize(message, special)})
    return msgs


def _alternating(history: Sequence[Turn]) -> list[Turn]:
    """Keep the history strictly alternating user/assistant and starting with a user turn, ending with assistant.

    Consecutive turns of the same role are joined; a leading assistant turn or a trailing user turn (a message that
    never got an answer) is dropped, because the templates require alternation.
    """
    out: list[Turn] = []
    for t in history:
        if not t.content.strip():
            continue
        if out and out[-1].role == t.role:
            out[-1] = Turn(role=t.role, content=out[-1].content + "\n\n" + t.content)
        elif out or t.role == "user":
            out.append(t)
    if out and out[-1].role == "user":
        out.pop()
    return out


def render(tokenizer: Any, history: Sequence[Turn], message: str, system_prompt: str | None = None,
           careful: bool = False) -> str:
    """The full prompt text, ending where the assistant's answer begins."""
    ensure_chat_template(tokenizer)
    msgs = to_messages(system_prompt_for(system_prompt, careful), history, message, special_tokens_of(tokenizer))
    return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def render_fitting(tokenizer: Any, history: Sequence[Turn], message: str, max_prompt_tokens: int,
                   count_tokens: Callable[[str], int] | None = None, system_prompt: str | None = None,
                   careful: bool = False) -> tuple[str, int]:
    """Render with the most recent history that fits `max_prompt_tokens`: drop the oldest turn pairs first,
    never the current message. Returns (prompt, number of history turns kept)."""
    count = count_tokens or (lambda s: len(tokenizer(s, add_special_tokens=False)["input_ids"]))
    turns = _alternating(history)
    while True:
        prompt = render(tokenizer, turns, message, system_prompt, careful)
        if not turns or count(prompt) <= max_prompt_tokens:
            return prompt, len(turns)
        turns = turns[2:]  # the oldest user/assistant pair


def render_request(tokenizer: Any, req: Any, max_context: int, count_tokens: Callable[[str], int] | None = None) -> str:
    """The prompt for a `GenerationRequest`: the newest history that leaves room for `max_new_tokens` in the
    context (every engine, local or remote, generates from exactly this)."""
    budget = max(64, max_context - req.sampling.max_new_tokens)
    prompt, _ = render_fitting(tokenizer, req.history, req.message, budget, count_tokens, req.system_prompt,
                               req.careful)
    return prompt


def training_example(tokenizer: Any, question: str, answer: str, system_prompt: str | None = None) -> dict:
    """A prompt/completion pair in exactly the served format (for trl's completion-only loss)."""
    prompt = render(tokenizer, [], question, system_prompt)
    eos = getattr(tokenizer, "eos_token", None) or ""
    completion = answer.strip()
    # Llama 2's template puts a space before the answer and " </s>" after it; other templates end the turn with
    # their own end-of-turn token, which is the tokenizer's eos for chat models.
    if getattr(tokenizer, "chat_template", None) == LLAMA2_CHAT_TEMPLATE or "[/INST]" in prompt[-10:]:
        completion = " " + completion + " " + eos
    else:
        completion = completion + eos
    return {"prompt": prompt, "completion": completion}
