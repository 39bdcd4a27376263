"""A real S3-protocol server on a loopback port for the tests: moto's standalone server in a child process.

The server checks signatures: after set-up (a bucket and one IAM user allowed ``s3:*``), every request
must be signed with that user's keys, so a wrong key is refused as a real S3 or MinIO server refuses it.

:class:`S3Server` also writes the pipeline's store settings the way ``docker-compose.yml`` gives them:
``DJ_STORES`` (protocol, endpoint, bucket, location = the schema prefix, ``secure`` false) and the keys
as DataJoint secrets ``stores.pipeline.access_key`` / ``stores.pipeline.secret_key`` in a project folder's
``.secrets/`` (next to its ``datajoint.json``), which DataJoint reads at start as it reads
``/run/secrets/datajoint/`` in compose.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REGION = "us-east-1"
BUCKET = "pipeline"
_ALLOW_S3 = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3Server:
    """A running moto server: its endpoint (``host:port``), the pipeline user's keys and the process."""

    endpoint: str
    access_key: str
    secret_key: str
    process: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def client(self, access_key: str | None = None, secret_key: str | None = None):
        """A boto3 S3 client signed with the pipeline user's keys (or the ones given)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
        )

    def keys(self, bucket: str = BUCKET, prefix: str = "") -> set[str]:
        """Every object key under ``prefix`` in ``bucket``."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return {item["Key"] for page in pages for item in page.get("Contents", ())}

    def stores_json(self, location: str, bucket: str = BUCKET) -> str:
        """``DJ_STORES`` as docker-compose.yml writes it, with this server's endpoint."""
        spec = dict(protocol="s3", endpoint=self.endpoint, bucket=bucket, location=location, secure=False)
        return json.dumps({"pipeline": spec})

    def project(self, folder: Path, access_key: str | None = None, secret_key: str | None = None) -> Path:
        """A project folder whose ``datajoint.json`` has ``.secrets/`` beside it holding the store's keys."""
        secrets = folder / ".secrets"
        secrets.mkdir(parents=True, exist_ok=True)
        (folder / "datajoint.json").write_text("{}\n")
        (secrets / "stores.pipeline.access_key").write_text((access_key or self.access_key) + "\n")
        (secrets / "stores.pipeline.secret_key").write_text((secret_key or self.secret_key) + "\n")
        return folder

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start(timeout_s: float = 60.0) -> S3Server:
    """Start ``python -m moto.server`` on a free loopback port, create the bucket and the pipeline's user,
    then switch signature checks on.  Raises RuntimeError when the server does not answer in time."""
    import boto3

    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"moto's S3 server did not start on port {port} within {timeout_s:.0f} s") from None
            time.sleep(0.1)
    # Before signature checks are on, any key may set up the account.
    setup = dict(endpoint_url=url, region_name=REGION, aws_access_key_id="setup", aws_secret_access_key="setup")
    iam = boto3.client("iam", **setup)
    iam.create_user(UserName="pipeline")
    iam.put_user_policy(UserName="pipeline", PolicyName="store", PolicyDocument=json.dumps(_ALLOW_S3))
    key = iam.create_access_key(UserName="pipeline")["AccessKey"]
    boto3.client("s3", **setup).create_bucket(Bucket=BUCKET)
    # From now on every request needs a valid signature of a known key.
    request = urllib.request.Request(
        url + "/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
    )
    urllib.request.urlopen(request, timeout=10).close()
    return S3Server(f"127.0.0.1:{port}", key["AccessKeyId"], key["SecretAccessKey"], process)
