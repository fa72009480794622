"""The ``security:`` and ``api:`` sections: validation, secrets kept out of dumps and
stage specs, and ``itsd config check``'s warning about an exposed gRPC port."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from itsd.config import (
    Config,
    config_from_json,
    config_to_json,
    is_local_bind,
    parse_config,
    security_warnings,
)
from itsd.errors import ConfigError

TOKEN = "a-token-that-is-long-enough-1"


def test_tokens_are_secret_and_stay_in_the_supervisor() -> None:
    cfg = parse_config({"security": {"admin_tokens": [TOKEN], "read_tokens": [TOKEN + "r"]}})
    assert cfg.security.has_tokens
    assert TOKEN not in repr(cfg) and TOKEN not in cfg.model_dump_json()
    staged = config_from_json(config_to_json(cfg))  # what a stage gets
    assert not staged.security.has_tokens


@pytest.mark.parametrize(
    ("security", "words"),
    [
        ({"tls_cert": "/c.pem"}, "tls_cert and tls_key go together"),
        ({"tls_client_ca": "/ca.pem"}, "needs tls_cert"),
        ({"admin_tokens": ["short"]}, "at least 16"),
        ({"read_tokens": ["has a space in it, long"]}, "without spaces"),
        ({"tokens": ["x"]}, "unknown key"),
    ],
)
def test_bad_security(security: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words) as err:
        parse_config({"security": security}, "itsd.yaml")
    assert "itsd.yaml: security" in str(err.value)


def test_api_limits() -> None:
    cfg = parse_config({"api": {"max_concurrent_streams": 4, "max_inflight_frames": 3}})
    assert (cfg.api.max_concurrent_streams, cfg.api.max_inflight_frames) == (4, 3)
    with pytest.raises(ConfigError, match=r"api\.max_concurrent_unary"):
        parse_config({"api": {"max_concurrent_unary": 0}})


def test_push_cameras_have_no_decoder_and_lose_no_frame() -> None:
    cam = parse_config({"cameras": [{"id": "gate", "source": "push://gate"}]}).cameras[0]
    assert cam.push and cam.lossless and cam.live


def test_warnings_for_an_exposed_grpc_port() -> None:
    assert is_local_bind("127.0.0.1") and is_local_bind("::1") and not is_local_bind("0.0.0.0")
    assert security_warnings(Config()) == []
    exposed = parse_config({"server": {"grpc_bind": "0.0.0.0"}})
    assert "neither TLS" in security_warnings(exposed)[0]
    tokens_only = parse_config(
        {"server": {"grpc_bind": "0.0.0.0"}, "security": {"admin_tokens": [TOKEN]}}
    )
    assert "clear text" in security_warnings(tokens_only)[0]
    tls = parse_config(
        {
            "server": {"grpc_bind": "::"},
            "security": {"tls_cert": "/c.pem", "tls_key": "/k.pem", "admin_tokens": [TOKEN]},
        }
    )
    assert security_warnings(tls) == []


def test_config_check_prints_the_warning(tmp_path: Path) -> None:
    path = tmp_path / "itsd.yaml"
    path.write_text(yaml.safe_dump({"server": {"grpc_bind": "0.0.0.0"}}))
    out = subprocess.run(
        [sys.executable, "-m", "itsd", "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0
    assert "OK" in out.stdout
    assert "warning: server.grpc_bind is 0.0.0.0" in out.stderr
