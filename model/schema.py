"""The one wire schema between the conversation manager and the inference worker.

Pydantic models with a schema version, importable without torch (like TGI's generate.proto).
Both sides must agree on SCHEMA_VERSION; a worker answers a request of another version with an error result.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

Role = Literal["user", "assistant"]


class Turn(BaseModel):
    """One message of a conversation as the model sees it."""

    model_config = ConfigDict(frozen=True)

    role: Role
    content: str


class SamplingParams(BaseModel):
    model_config = ConfigDict(frozen=True)

    max_new_tokens: int = Field(default=256, ge=1, le=4096)
    temperature: float = Field(default=0.7, ge=0.0, le=5.0)  # 0 = greedy
    top_p: float = Field(default=0.9, gt=0.0, le=1.0)
    repetition_penalty: float = Field(default=1.1, ge=1.0, le=3.0)
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class GenerationRequest(BaseModel):
    """A request to generate the assistant's next turn.

    `history` is the recent conversation (oldest first) WITHOUT the current message; the engine drops the
    oldest turns that do not fit the model's context, never `message`.
    """

    schema_version: int = SCHEMA_VERSION
    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    conversation: str = ""  # opaque conversation key (platform:user[:thread]); never contains message text
    system_prompt: str | None = None  # None = the default system prompt of model.prompt
    history: list[Turn] = Field(default_factory=list)
    message: str
    careful: bool = False  # safety's careful mode: the prompt gets the careful-mode addendum
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    stream: bool = True
    created_at: float = Field(default_factory=time.time)
    deadline: float | None = None  # epoch seconds after which nobody waits for the answer


FinishReason = Literal["stop", "length", "error", "expired"]


class GenerationResult(BaseModel):
    schema_version: int = SCHEMA_VERSION
    request_id: str
    text: str = ""
    finish_reason: FinishReason = "stop"
    error: str | None = None  # a short machine-readable reason, never message text
    prompt_tokens: int = 0
    completion_tokens: int = 0
    queue_seconds: float = 0.0
    first_token_seconds: float | None = None  # from generation start to first token
    generation_seconds: float = 0.0
    worker: str | None = None
    guard_violations: list[str] = Field(default_factory=list)  # what the output guard caught (reason codes)
    replaced: bool = False  # the text is the guard's safe reply, not the model's

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.generation_seconds if self.generation_seconds > 0 else 0.0


class StreamChunk(BaseModel):
    """A piece of streamed text for one request. `index` counts chunks from 0 so a reader can resume."""

    schema_version: int = SCHEMA_VERSION
    request_id: str
    index: int
    delta: str


def error_result(request_id: str, error: str, **kw) -> GenerationResult:
    return GenerationResult(**{"request_id": request_id, "finish_reason": "error", "error": error, **kw})
