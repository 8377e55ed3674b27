"""The ``callcentre`` command end to end (click's runner, real SQLite files)."""

from __future__ import annotations

import json
import wave
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner
from sqlalchemy import MetaData, create_engine, select

from callcentre.bootstrap import build_platform
from callcentre.cli import main
from callcentre.prompt_catalogue import flows_beside, prompt_texts
from callcentre.settings import Settings
from ivr.flow import default_flow_path, load_flow
from ivr.prompts import read_manifest, stale_prompts
from telephony.memory import MemoryBackend
from tests.peers import require_binary

PROMPTS = default_flow_path().parents[1] / "prompts"


def run(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Any:
    result = CliRunner().invoke(main, list(args), env=env, input=input, catch_exceptions=False)
    return result


def dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = create_engine(url)
    meta = MetaData()
    meta.reflect(engine)
    with engine.connect() as connection:
        data = {name: sorted(map(tuple, connection.execute(select(table)).fetchall()), key=repr)
                for name, table in meta.tables.items()}
    engine.dispose()
    return data


def test_db_upgrade_and_demo_data_twice_leave_the_same_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cc.db'}"
    env = {"CALLCENTRE_DATABASE_URL": url}
    assert run("db", "upgrade", env=env).exit_code == 0
    first = run("demo-data", env=env)
    assert first.exit_code == 0 and "4 queues, 6 skills, 12 staff, 50 customers" in first.output
    before = dump(url)
    assert run("db", "upgrade", env=env).exit_code == 0
    assert run("demo-data", env=env).exit_code == 0
    after = dump(url)
    assert before == after
    assert len(after["customers"]) >= 50 and len(after["agents"]) >= 10
    assert len(after["queues"]) >= 3 and len(after["skills"]) >= 6


def test_ivr_check_default_and_broken(tmp_path: Path) -> None:
    ok = run("ivr", "check", str(default_flow_path()), "--prompts", str(PROMPTS))
    assert ok.exit_code == 0 and "is valid" in ok.output
    data = yaml.safe_load(default_flow_path().read_text(encoding="utf-8"))
    data["steps"]["identify"]["next"] = "no_such_step"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    result = CliRunner().invoke(main, ["ivr", "check", str(bad)])
    assert result.exit_code != 0
    assert "step 'identify'" in result.output and "no_such_step" in result.output


def test_calls_show_json_after_an_ivr_call(demo_settings: Settings) -> None:
    platform = build_platform(demo_settings, MemoryBackend())
    platform.start()
    mem = platform.backend
    assert isinstance(mem, MemoryBackend)
    call_id = mem.place_call("+15550100001")
    mem.press(call_id, "1")
    env = {"CALLCENTRE_DATABASE_URL": demo_settings.database.url}
    try:
        listed = json.loads(run("calls", "list", "--json", env=env).output)
        shown = json.loads(run("calls", "show", call_id, "--json", env=env).output)
    finally:
        platform.stop()
    assert call_id in [c["id"] for c in listed]
    assert shown["state"] == "queued" and shown["reason"] == "billing"
    assert {i["key"] for i in shown["context"]} >= {"caller_id", "customer_id", "reason"}
    missing = CliRunner().invoke(main, ["calls", "show", "call-nope", "--json"], env=env)
    assert missing.exit_code != 0 and "no call call-nope" in missing.output


def test_ivr_try_walks_the_flow() -> None:
    result = run("ivr", "try", str(default_flow_path()), "--caller-id", "+19990000000", input="\n\n\n2\n")
    assert result.exit_code == 0
    assert "Please enter your account number" in result.output
    assert "Enqueue" in result.output and "'queue': 'technical'" in result.output


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    env = {"CALLCENTRE_TWILIO_AUTH_TOKEN": "super-secret-token", "CALLCENTRE_SIP_PORT": "5099"}
    result = run("config", "show", "--json", env=env)
    data = json.loads(result.output)
    assert data["sip"]["port"] == 5099 and data["twilio"]["auth_token"] == "********"
    assert "super-secret-token" not in result.output
    toml_out = run("config", "show", env=env).output
    assert "[database]" in toml_out and "super-secret-token" not in toml_out


def shipped_prompts() -> dict[str, str]:
    return prompt_texts(flows_beside(default_flow_path()))


def test_shipped_prompts_match_the_shipped_flows() -> None:
    """Every prompt of every shipped flow and of the queue has an 8 kHz recording of its current text."""
    texts = shipped_prompts()
    assert set(load_flow(default_flow_path()).prompts) <= set(texts)
    assert stale_prompts(texts, PROMPTS) == []
    for pid in texts:
        with wave.open(str(PROMPTS / f"{pid}.wav")) as wav:
            assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
            assert wav.getnframes() > 8000 * 0.5
    assert set(read_manifest(PROMPTS)) == set(texts), "recordings without a flow prompt: remove them"


def test_prompts_build_with_espeak(tmp_path: Path) -> None:
    require_binary("espeak-ng")
    require_binary("sox")
    out = tmp_path / "prompts"
    first = run("prompts", "build", "--out", str(out))
    assert first.exit_code == 0, first.output
    assert f"{len(shipped_prompts())} prompt(s) built" in first.output
    again = run("prompts", "build", "--out", str(out))
    assert "0 prompt(s) built" in again.output
    with wave.open(str(out / "welcome.wav")) as wav:
        frames = wav.readframes(wav.getnframes())
    assert max(abs(int.from_bytes(frames[i:i + 2], "little", signed=True)) for i in range(0, len(frames), 2)) > 1000
