"""`.env.example` generated from the Settings model: every setting, its variable name, default and description.

    python -m bot.envdoc > .env.example

tests/test_deploy.py fails when the committed file and this output differ, so the two never drift apart.
"""

from __future__ import annotations

import re
import sys
import typing
from pathlib import Path

from pydantic import AliasChoices, SecretStr

from bot.settings import Settings

HEADER = """\
# counsel-bot configuration: copy to .env and uncomment what you change. Every setting is optional except the
# tokens of the platforms you run. Secrets belong here (or in the environment), never in the image or in git.
# Generated from bot/settings.py by `python -m bot.envdoc > .env.example`; tests check that the two agree.
# In compose.yaml, COUNSEL_REDIS_URL and COUNSEL_METRICS_PORT are set per service and override this file.
"""

_SECTION = re.compile(r"^\s+# --- (.+?) -+\s*$")
_FIELD = re.compile(r"^    (\w+):")


def env_name(name: str) -> str:
    """The environment variable a field is read from (its alias, or COUNSEL_ + the upper-cased name)."""
    alias = Settings.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    if isinstance(alias, str):
        return alias
    return Settings.model_config.get("env_prefix", "") + name.upper()


def _sections() -> dict[str, str]:
    """Field name -> the `# --- section ---` comment above it in bot/settings.py."""
    source = Path(sys.modules[Settings.__module__].__file__).read_text(encoding="utf-8").splitlines()
    out, current = {}, "settings"
    for line in source:
        if m := _SECTION.match(line):
            current = m.group(1)
        elif (m := _FIELD.match(line)) and m.group(1) in Settings.model_fields:
            out[m.group(1)] = current
    return out


def _default(value) -> str:
    if value is None or isinstance(value, SecretStr):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        home = str(Path.home())
        text = str(value)
        return "~" + text[len(home):] if text.startswith(home) else text
    return str(value)


def _choices(annotation) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return " (" + " | ".join(str(a) for a in typing.get_args(annotation)) + ")"
    return ""


def env_example() -> str:
    sections = _sections()
    lines = [HEADER]
    current = None
    for name, field in Settings.model_fields.items():
        section = sections.get(name, "settings")
        if section != current:
            lines.append(f"\n# === {section} ===\n")
            current = section
        desc = (field.description or "").strip()
        lines.append(f"# {desc}{_choices(field.annotation)}\n" if desc else "")
        lines.append(f"# {env_name(name)}={_default(field.get_default(call_default_factory=True))}\n")
    return "".join(lines)


if __name__ == "__main__":
    sys.stdout.write(env_example())
