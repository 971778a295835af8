"""`file://` locations mean this machine's files, spelled as RFC 8089 spells them (issue 19, item 12)."""

from __future__ import annotations

import pytest

from data_prep import storage
from pipelines.cli import main
from pipelines.config import ConfigError, load_pipeline
from tests.conftest import PIPELINES


def test_a_file_uri_is_percent_decoded_and_keeps_hash_signs_in_names(tmp_path):
    video = tmp_path / "taichi set" / "abc#12#80.mp4"
    video.parent.mkdir()
    video.write_bytes(b"data")
    uri = f"file://{str(video.parent).replace(' ', '%20')}/abc#12#80.mp4"
    assert storage.local(uri) == video and storage.read_bytes(uri) == b"data"
    assert storage.local(f"file://localhost{video}") == video


@pytest.mark.parametrize("uri", ["file://lvdm-work", "file://nas/data/ucf101", "file://"])
def test_a_file_uri_naming_another_host_or_no_path_is_refused(uri):
    with pytest.raises(storage.LocationError, match=r"file:///absolute/path"):
        storage.local(uri)


def test_the_cli_and_the_config_name_the_file_uri_and_the_fix(capsys):
    with pytest.raises(SystemExit) as exit_code:
        main(["status", "--workdir", "file://lvdm-work"])
    assert exit_code.value.code == 2
    assert "names a host ('lvdm-work')" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"data.root: .*names a host \('nas'\).*\./nas/ucf101"):
        load_pipeline(PIPELINES / "ucf101.yaml", ["data.root=file://nas/ucf101"])
    assert (
        load_pipeline(PIPELINES / "ucf101.yaml", ["data.root=file:///data/ucf"]).data.root
        == "file:///data/ucf"
    )
