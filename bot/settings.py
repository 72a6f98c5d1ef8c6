"""All settings, from the environment (and `.env`). Built once at the entry point and passed down."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)


def _alias(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class Settings(BaseSettings):
    # env_ignore_empty: `COUNSEL_METRICS_PORT=` (a line of .env.example uncommented but left blank) means unset.
    model_config = SettingsConfigDict(env_prefix="COUNSEL_", env_file=".env", env_file_encoding="utf-8",
                                      extra="ignore", populate_by_name=True, env_ignore_empty=True)

    # --- state ---------------------------------------------------------------------------------------------
    redis_url: str | None = Field(None, description="unset = embedded in-process stores and engine")
    redis_timeout_s: float = Field(5.0, gt=0, description="connect and socket timeout for every Redis call")
    history_ttl_days: float = Field(7.0, gt=0, description="a conversation is forgotten this long after its last turn")
    history_max_turns: int = Field(40, ge=2, description="turns kept per conversation (the prompt is then trimmed by tokens)")

    # --- model ---------------------------------------------------------------------------------------------
    base_model: str | None = Field(None, description="hub id, local folder or .gguf file; unset = embedded SmolLM2")
    adapter: str | None = Field("default", description="PEFT adapter: hub id or folder; 'default' = the shipped "
                                                        "adapter for the default model; 'none' = no adapter")
    load_in_4bit: bool = Field(False, description="NF4 weights via bitsandbytes (CUDA only)")
    merge_adapter: bool = Field(True, description="merge the LoRA adapter into the weights for serving (not with 4-bit)")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="weights dtype; auto = bfloat16 where supported, else float32")
    model_cache_dir: Path = Field(Path.home() / ".cache" / "counsel-bot",
                                  description="where the converted GGUF default model is cached")
    max_new_tokens: int = Field(256, ge=1, le=4096, description="longest reply, in tokens")
    temperature: float = Field(0.7, ge=0.0, le=5.0, description="sampling temperature; 0 = greedy")
    top_p: float = Field(0.9, gt=0.0, le=1.0, description="nucleus sampling: keep the top tokens up to this mass")
    repetition_penalty: float = Field(1.1, ge=1.0, le=3.0, description="1 = none; >1 discourages repeating")
    max_context_tokens: int | None = Field(None, description="prompt + reply budget; unset = the model's own")

    # --- engine: in the worker process, or an OpenAI-compatible server (vLLM, TGI, SGLang) ----------------
    engine: Literal["local", "openai"] = Field(
        "local", description="local = the worker loads the model itself; openai = the worker sends its batches to "
                             "an OpenAI-compatible server serving the same base model and adapter")
    openai_base_url: str = Field("http://127.0.0.1:8000/v1",
                                 description="the server's API root (ends in /v1); with COUNSEL_ENGINE=openai")
    openai_model: str = Field("counsel", description="model name sent to the server: the LoRA module name "
                                                     "(vllm serve --lora-modules counsel=/adapters/current)")
    openai_api_key: SecretStr | None = Field(None, description="bearer token if the server wants one "
                                                               "(vllm serve --api-key)")
    openai_timeout_s: float = Field(60.0, gt=0, description="longest wait for one streamed completion")
    openai_concurrency: int = Field(16, ge=1, description="requests of one batch in flight at once")
    engine_mode: Literal["auto", "plain", "static", "continuous"] = Field(
        "auto", description="local engine: plain = transformers generate (reference); static = continuous batching "
                            "on a static slot KV cache with CUDA-graph decoding; continuous = transformers' paged "
                            "continuous batching; auto = static on a CUDA GPU, plain on CPU")
    engine_slots: int = Field(64, ge=1, description="conversations decoded together (static/continuous modes)")
    mixed_steps: bool = Field(True, description="static mode on a GPU: prompts that arrive while others decode are "
                                                 "prefilled in chunks inside the decode steps (with the Triton "
                                                 "attention)")
    kv_cache_dtype: Literal["auto", "fp8"] = Field(
        "auto", description="static mode's K/V cache: auto = the model's dtype; fp8 = float8 e4m3, half the memory "
                            "and half the K/V each decode step reads (CUDA with the Triton attention only)")

    # --- worker --------------------------------------------------------------------------------------------
    worker_batch_size: int = Field(8, ge=1, description="most requests generated together")
    worker_batch_wait_ms: int = Field(20, ge=0, description="how long a batch waits to fill up")
    request_timeout_s: float = Field(120.0, gt=0, description="after this the user gets a kind fallback message")

    # --- conversation ------------------------------------------------------------------------------------
    rate_limit_messages: int = Field(12, ge=1, description="messages per user per rate-limit window")
    rate_limit_window_s: float = Field(60.0, gt=0, description="the rate-limit window, in seconds")
    max_message_chars: int = Field(4000, ge=100, description="longer messages are cut to this before the model")
    careful_mode_hours: float = Field(24.0, ge=0, description="how long a conversation stays careful after a crisis")
    region: str = Field("US", description="crisis resources region: US, UK, IE, CA, AU, or INTL")
    log_message_text: bool = Field(False, description="log message text (health data!) - for local debugging only")
    safety_embedding: bool = Field(True, description="crisis screen: add the embedding layer (multilingual-e5-small, "
                                                     "CPU, loads once) behind the rules; false = rules only")

    # --- Discord -------------------------------------------------------------------------------------------
    discord_token: SecretStr | None = Field(None, validation_alias=_alias("DISCORD_TOKEN"),
                                            description="the Discord bot token (Developer Portal > Bot)")
    discord_test_guild: int | None = Field(None, description="register slash commands to this guild only (instant)")
    discord_public_reply: Literal["invite_dm", "full"] = Field(
        "invite_dm", description="in a server channel: answer briefly and invite to DM, or answer in full")
    admin_discord_channel: int | None = Field(None, description="channel id that receives crisis alerts")

    # --- Slack ---------------------------------------------------------------------------------------------
    slack_bot_token: SecretStr | None = Field(None, validation_alias=_alias("SLACK_BOT_TOKEN"),
                                              description="xoxb-... Bot User OAuth Token")
    slack_signing_secret: SecretStr | None = Field(None, validation_alias=_alias("SLACK_SIGNING_SECRET"),
                                                   description="verifies HTTP-mode requests (Basic Information)")
    slack_app_token: SecretStr | None = Field(None, validation_alias=_alias("SLACK_APP_TOKEN"),
                                              description="xapp-... app-level token; set = Socket Mode, "
                                                          "unset = HTTP on COUNSEL_SLACK_PORT")
    slack_port: int = Field(3000, ge=1, le=65535, description="HTTP mode: port of /slack/events")
    slack_api_url: str = Field("https://slack.com/api/", description="Slack Web API base URL")
    admin_slack_channel: str | None = Field(None, description="channel id that receives crisis alerts")
    alert_include_text: bool = Field(False, description="include the message text in crisis alerts")

    # --- operations ----------------------------------------------------------------------------------------
    metrics_port: int | None = Field(None, description="serve /metrics, /healthz and /readyz on this port")
    metrics_host: str = Field("0.0.0.0", description="address the metrics/health endpoint binds to")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    log_format: Literal["text", "json"] = Field("text", description="json = one JSON object per log line "
                                                                    "(message text never included by default)")

    def redacted(self) -> dict:
        """The effective configuration, secrets redacted (SecretStr prints as '**********')."""
        out = {}
        for k, v in self.model_dump().items():
            out[k] = "**********" if isinstance(v, SecretStr) else v
        if self.redis_url and "@" in self.redis_url:  # redis://user:password@host
            scheme, rest = self.redis_url.split("://", 1)
            out["redis_url"] = f"{scheme}://***@{rest.split('@', 1)[1]}"
        return out


def load_settings(**overrides) -> Settings:
    return Settings(**overrides)
