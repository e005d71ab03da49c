"""`inv render` end to end: the example configuration, bad values, nothing written on error."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT_ROOT, write_ssh_keypair

INV = str(Path(sys.executable).with_name("inv"))
ACCESS_KEY = "AKIATESTACCESSKEY123"
SECRET_KEY = "testSecretKey/With+Slashes0123456789abcd"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder with the example configuration pointing at a fresh SSH key."""
    key = write_ssh_keypair(tmp_path)
    example = (PROJECT_ROOT / "invoke.example.yaml").read_text()
    (tmp_path / "invoke.yaml").write_text(example.replace("~/.ssh/id_ed25519.pub", str(key)))
    return tmp_path


def run_render(
    workdir: Path, *args: str, env_extra: dict | None = None
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ZOT_", "INVOKE_"))}
    env.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY})
    env["ZOT_HETZNER_STATE_DIR"] = str(workdir / "state")
    env.update(env_extra or {})
    return subprocess.run(
        [
            INV,
            "--search-root",
            str(PROJECT_ROOT),
            "-f",
            str(workdir / "invoke.yaml"),
            "render",
            *args,
        ],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_example_config_renders(workdir):
    result = run_render(workdir)
    assert result.returncode == 0, result.stderr
    output = workdir / "cloud-init-custom.yaml"
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    data = yaml.safe_load(output.read_text())
    assert any(entry["path"] == "/etc/zot/credentials.env" for entry in data["write_files"])
    # Generated passwords are shown once and saved with mode 0600.
    for user in ("admin", "ci", "viewer"):
        saved = workdir / "state" / "registry" / "passwords" / user
        assert stat.S_IMODE(saved.stat().st_mode) == 0o600
        assert saved.read_text().strip() in result.stdout
    assert SECRET_KEY not in result.stdout + result.stderr
    assert "readable on the server" in result.stderr
    if shutil.which("cloud-init"):
        schema = subprocess.run(
            ["cloud-init", "schema", "--config-file", str(output)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert schema.returncode == 0, schema.stdout + schema.stderr

    second = run_render(workdir)
    assert second.returncode == 0, second.stderr
    assert "generated a password" not in second.stdout


def test_deploy_mode_and_files(workdir):
    result = run_render(workdir, "--mode", "deploy", "--files", str(workdir / "files"))
    assert result.returncode == 0, result.stderr
    user_data = (workdir / "cloud-init-custom.yaml").read_text()
    assert SECRET_KEY not in user_data
    assert ACCESS_KEY not in user_data
    credentials = workdir / "files" / "etc" / "zot" / "credentials.env"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert (workdir / "files" / "etc" / "caddy" / "Caddyfile").is_file()


def set_value(config: Path, dotted: str, value) -> None:
    data = yaml.safe_load(config.read_text())
    target = data["deployment"]
    parts = dotted.split(".")
    for part in parts[:-1]:
        target = target[part]
    target[parts[-1]] = value
    config.write_text(yaml.safe_dump(data))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("domain", "not a domain"),
        ("storage.bucket", "Bad_Bucket"),
        ("storage.location", "ams3"),
        ("server.location", "mars1"),
    ],
)
def test_bad_value_writes_nothing(workdir, key, value):
    set_value(workdir / "invoke.yaml", key, value)
    result = run_render(workdir)
    assert result.returncode != 0
    assert f"deployment.{key} = {value!r}" in result.stderr
    assert not (workdir / "cloud-init-custom.yaml").exists()
    assert not (workdir / "state").exists()


def test_bad_username_writes_nothing(workdir):
    config = workdir / "invoke.yaml"
    config.write_text(config.read_text().replace("name: viewer", "name: 'view:er'"))
    result = run_render(workdir)
    assert result.returncode != 0
    assert "deployment.users.2.name = 'view:er'" in result.stderr
    assert not (workdir / "cloud-init-custom.yaml").exists()


def test_missing_secret_without_terminal_lists_it(workdir):
    result = run_render(workdir, env_extra={"AWS_SECRET_ACCESS_KEY": ""})
    assert result.returncode != 0
    assert "AWS_SECRET_ACCESS_KEY is missing; export it" in result.stderr
    assert not (workdir / "cloud-init-custom.yaml").exists()


def test_secrets_file_must_be_private(workdir):
    secrets = workdir / "secrets.env"
    secrets.write_text(f"AWS_ACCESS_KEY_ID={ACCESS_KEY}\nAWS_SECRET_ACCESS_KEY={SECRET_KEY}\n")
    secrets.chmod(0o644)
    result = run_render(
        workdir,
        "--secrets-file",
        str(secrets),
        env_extra={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""},
    )
    assert result.returncode != 0
    assert "chmod 600" in result.stderr
    secrets.chmod(0o600)
    result = run_render(
        workdir,
        "--secrets-file",
        str(secrets),
        env_extra={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""},
    )
    assert result.returncode == 0, result.stderr


def test_terminal_prompts_for_missing_values(workdir):
    """On a terminal, render asks for what is missing, re-asks after a bad answer, hides secrets."""
    import pty
    import select
    import time

    config = workdir / "invoke.yaml"
    data = yaml.safe_load(config.read_text())
    del data["deployment"]["domain"]
    del data["deployment"]["storage"]["bucket"]
    config.write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ZOT_", "INVOKE_"))}
    env["ZOT_HETZNER_STATE_DIR"] = str(workdir / "state")
    answers = [
        ("Registry domain", "not a domain"),
        ("Registry domain", "typed.example.com"),
        ("bucket name", "typed-bucket"),
        ("access key", ACCESS_KEY),
        ("secret key", SECRET_KEY),
    ]
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(workdir)
        os.execve(INV, [INV, "--search-root", str(PROJECT_ROOT), "-f", str(config), "render"], env)
    transcript = ""
    deadline = time.monotonic() + 120
    try:
        for prompt, answer in answers:
            while prompt not in transcript.rsplit("\n", 1)[-1] and time.monotonic() < deadline:
                ready, _, _ = select.select([fd], [], [], 1)
                if ready:
                    transcript += os.read(fd, 4096).decode(errors="replace").replace("\r", "")
            assert prompt in transcript, transcript
            os.write(fd, (answer + "\n").encode())
            transcript += "\n"
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            transcript += chunk.decode(errors="replace").replace("\r", "")
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, transcript
    assert "'not a domain' has an invalid label" in transcript
    assert SECRET_KEY not in transcript
    assert ACCESS_KEY not in transcript
    rendered = yaml.safe_load((workdir / "cloud-init-custom.yaml").read_text())
    caddyfile = next(f for f in rendered["write_files"] if f["path"] == "/etc/caddy/Caddyfile")
    assert "typed.example.com {" in caddyfile["content"]


def test_all_problems_reported_together(workdir):
    set_value(workdir / "invoke.yaml", "domain", "bad domain")
    set_value(workdir / "invoke.yaml", "storage.bucket", "Bad_Bucket")
    result = run_render(workdir, env_extra={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""})
    assert result.returncode != 0
    assert "deployment.domain = 'bad domain'" in result.stderr
    assert "deployment.storage.bucket = 'Bad_Bucket'" in result.stderr
    assert "AWS_ACCESS_KEY_ID is missing" in result.stderr
    assert "AWS_SECRET_ACCESS_KEY is missing" in result.stderr


def test_deploy_mode_needs_no_secrets(workdir):
    result = run_render(
        workdir,
        "--mode",
        "deploy",
        env_extra={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""},
    )
    assert result.returncode == 0, result.stderr
    assert not (workdir / "state" / "registry" / "passwords").exists()
    assert "generated a password" not in result.stdout
