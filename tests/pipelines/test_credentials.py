"""Credentials inside URIs are used where they belong and shown nowhere (issue 19, item 7)."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from data_prep import storage
from pipelines.cli import main
from pipelines.config import ConfigError, load_pipeline, to_yaml
from pipelines.runner import PipelineError, _check_tracking_server
from tests.conftest import PIPELINES

SECRET = "p4ss@w/rd"  # a raw '@' and '/' as people paste them
QUOTED = "p4ss%40w%2Frd"


class _BasicAuthServer:
    """Answers MLflow's search call with 200 to `alice:SECRET` and 401 to anyone else."""

    def __init__(self) -> None:
        self.seen: list[str | None] = []
        self.expected = expected = "Basic " + base64.b64encode(f"alice:{SECRET}".encode()).decode()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.seen.append(self.headers.get("Authorization"))
                ok = self.headers.get("Authorization") == expected
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.http.server_address[1]}"


@pytest.fixture
def auth_server() -> Iterator[_BasicAuthServer]:
    server = _BasicAuthServer()
    thread = threading.Thread(target=server.http.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.http.shutdown()
    server.http.server_close()


def test_the_mlflow_probe_sends_uri_credentials_as_basic_auth(auth_server, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    _check_tracking_server(f"http://alice:{QUOTED}@{auth_server.host}")
    assert auth_server.seen == [auth_server.expected]


def test_the_mlflow_probe_reads_mlflows_own_credential_variables(auth_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    _check_tracking_server(f"http://{auth_server.host}")
    assert auth_server.seen == [auth_server.expected]


def test_refused_credentials_are_named_by_their_variables_and_never_shown(auth_server, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    with pytest.raises(PipelineError) as info:
        _check_tracking_server(f"http://alice:{QUOTED}x@{auth_server.host}")
    message = str(info.value)
    assert f"http://{auth_server.host}: the server asks for credentials" in message
    assert "MLFLOW_TRACKING_USERNAME" in message and "p4ss" not in message


def test_the_recorded_config_never_holds_the_tracking_credentials():
    config = load_pipeline(
        PIPELINES / "demo.yaml", [f"mlflow.tracking_uri=https://alice:{QUOTED}@mlflow:5000"]
    )
    assert config.mlflow.tracking_uri.startswith("https://alice:")  # used as given in this process
    recorded = to_yaml(config)
    assert "tracking_uri: https://mlflow:5000" in recorded and "p4ss" not in recorded


@pytest.mark.parametrize(
    "uri", ["s3://AKIAKEY:se/cr+et@bucket/w", "s3://AKIAKEY:secret@bucket/w", "gs://u@b/w"]
)
def test_a_storage_uri_with_credentials_is_refused_pointing_to_the_environment(uri):
    for call in (storage.absolute, storage.resolve):
        with pytest.raises(storage.CredentialsInURIError) as info:
            call(uri)
        assert "AKIAKEY" not in str(info.value) and "se/cr" not in str(info.value)
    if uri.startswith("s3"):
        assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in str(info.value)


def test_workdir_and_data_root_with_credentials_exit_2_without_echoing_them(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_code:
        main(["run", "--workdir", "s3://AKIAKEY:se/cret@bucket/w"])
    assert exit_code.value.code == 2
    err = capsys.readouterr().err
    assert "credentials in it" in err and "AKIAKEY" not in err and "cret" not in err
    with pytest.raises(ConfigError) as info:
        load_pipeline(PIPELINES / "ucf101.yaml", ["data.root=s3://AKIAKEY:se/cret@bucket/ucf"])
    assert "data.root" in str(info.value) and "AWS_SECRET_ACCESS_KEY" in str(info.value)
    assert "AKIAKEY" not in str(info.value) and "cret" not in str(info.value)
