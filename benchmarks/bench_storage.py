"""Workdir I/O through `data_prep.storage`: a local folder vs an S3-protocol server, same run.

Writes shard-sized files the way the stages do (one whole-file write each; a staged folder
published by a task), then reads them back the way the loaders do (`read_shard` streaming the
tar), and prints MB/s for both and the local/S3 ratio. The last row is the baseline `read_shard`
replaced: tarfile over a stream without read-ahead, one range request per 10 KB block; compare
it with the `read_shard` row's s3 column. With no `--endpoint` it starts moto's
server on 127.0.0.1: moto is a Python test server, so its figure is a floor for the code path,
not what S3 or MinIO deliver; give `--endpoint http://HOST:9000 --bucket B` (and the AWS_* keys)
to measure a real store.

    python benchmarks/bench_storage.py --files 16 --mb 4
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from data_prep import storage
from data_prep.shard_writer import read_shard, write_shard


def start_moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("moto_server did not start")


def measure(root: str, files: int, payload: bytes) -> dict[str, float]:
    """MB/s of whole-file writes, of a staged folder published, and of streaming tar reads."""
    megabytes = files * len(payload) / 2**20
    started = time.perf_counter()
    for index in range(files):
        storage.write_bytes(storage.join(root, "direct", f"file-{index:04d}.bin"), payload)
    direct = megabytes / (time.perf_counter() - started)

    started = time.perf_counter()
    with storage.staged_folder(storage.join(root, "staged"), last=("chunks",)) as folder:
        for index in range(files):
            write_shard(folder / f"train-{index:06d}.tar", [{"__key__": f"v{index}", "bin": payload}])
    staged = megabytes / (time.perf_counter() - started)

    started = time.perf_counter()
    read = sum(
        len(fields["bin"])
        for shard in storage.glob(storage.join(root, "staged", "train-*.tar"))
        for _, fields in read_shard(shard)
    )
    assert read == files * len(payload)
    streamed = megabytes / (time.perf_counter() - started)

    # The baseline read_shard replaced: tarfile over the store's stream with no read-ahead.
    started = time.perf_counter()
    for shard in storage.glob(storage.join(root, "staged", "train-*.tar")):
        filesystem, path = storage.resolve(shard)
        with filesystem.open_input_stream(path) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                tar.extractfile(member).read()
    unbuffered = megabytes / (time.perf_counter() - started)
    return {"write": direct, "staged publish": staged, "read_shard": streamed, "unbuffered read": unbuffered}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--mb", type=float, default=4.0, help="size of each file")
    parser.add_argument("--endpoint", help="an S3-protocol server (default: start moto on 127.0.0.1)")
    parser.add_argument("--bucket", default="lvdm-bench")
    args = parser.parse_args()

    payload = np.random.default_rng(0).integers(0, 256, int(args.mb * 2**20), dtype=np.uint8).tobytes()
    server = None
    if args.endpoint is None:
        server, args.endpoint = start_moto()
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ["AWS_ENDPOINT_URL"] = args.endpoint
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    try:
        from pyarrow import fs as pafs

        s3 = pafs.S3FileSystem(endpoint_override=args.endpoint, allow_bucket_creation=True)
        s3.create_dir(args.bucket)
        with tempfile.TemporaryDirectory() as folder:
            local = measure(folder, args.files, payload)
        remote = measure(f"s3://{args.bucket}/bench-{os.getpid()}", args.files, payload)
    finally:
        if server is not None:
            server.terminate()
    store = "moto on 127.0.0.1" if server is not None else args.endpoint
    print(f"{args.files} files x {args.mb} MB; S3 endpoint: {store}")
    for name in local:
        print(
            f"{name:>15}: local {local[name]:8.1f} MB/s   s3 {remote[name]:8.1f} MB/s   "
            f"local/s3 {local[name] / remote[name]:5.1f}x"
        )


if __name__ == "__main__":
    main()
