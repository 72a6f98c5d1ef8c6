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
    model_config = SettingsConfigDict(env_prefix="COUNSEL_", env_file=".env", env_file_encoding="utf-8",
                                      extra="ignore", populate_by_name=True)

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
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    model_cache_dir: Path = Field(Path.home() / ".cache" / "counsel-bot",
                                  description="where the converted GGUF default model is cached")
    max_new_tokens: int = Field(256, ge=1, le=4096)
    temperature: float = Field(0.7, ge=0.0, le=5.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.1, ge=1.0, le=3.0)
    max_context_tokens: int | None = Field(None, description="prompt + reply budget; unset = the model's own")

    # --- worker --------------------------------------------------------------------------------------------
    worker_batch_size: int = Field(8, ge=1)
    worker_batch_wait_ms: int = Field(20, ge=0)
    request_timeout_s: float = Field(120.0, gt=0, description="after this the user gets a kind fallback message")

    # --- conversation ------------------------------------------------------------------------------------
    rate_limit_messages: int = Field(12, ge=1, description="messages per user per rate-limit window")
    rate_limit_window_s: float = Field(60.0, gt=0)
    max_message_chars: int = Field(4000, ge=100, description="longer messages are cut to this before the model")
    careful_mode_hours: float = Field(24.0, ge=0, description="how long a conversation stays careful after a crisis")
    region: str = Field("US", description="crisis resources region: US, UK, IE, CA, AU, or INTL")
    log_message_text: bool = Field(False, description="log message text (health data!) - for local debugging only")

    # --- Discord -------------------------------------------------------------------------------------------
    discord_token: SecretStr | None = Field(None, validation_alias=_alias("DISCORD_TOKEN"))
    discord_test_guild: int | None = Field(None, description="register slash commands to this guild only (instant)")
    discord_public_reply: Literal["invite_dm", "full"] = Field(
        "invite_dm", description="in a server channel: answer briefly and invite to DM, or answer in full")
    admin_discord_channel: int | None = Field(None, description="channel id that receives crisis alerts")

    # --- Slack ---------------------------------------------------------------------------------------------
    slack_bot_token: SecretStr | None = Field(None, validation_alias=_alias("SLACK_BOT_TOKEN"))
    slack_signing_secret: SecretStr | None = Field(None, validation_alias=_alias("SLACK_SIGNING_SECRET"))
    slack_app_token: SecretStr | None = Field(None, validation_alias=_alias("SLACK_APP_TOKEN"))
    slack_port: int = Field(3000, ge=1, le=65535)
    slack_api_url: str = Field("https://slack.com/api/")
    admin_slack_channel: str | None = Field(None, description="channel id that receives crisis alerts")
    alert_include_text: bool = Field(False, description="include the message text in crisis alerts")

    # --- operations ----------------------------------------------------------------------------------------
    metrics_port: int | None = Field(None, description="serve /metrics, /healthz and /readyz on this port")
    log_level: str = "INFO"

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
