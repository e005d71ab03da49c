"""A loopback S3 server standing in for Hetzner Object Storage: moto's server, with IAM auth.

moto accepts any credentials until credential checks are turned on. This stand-in
creates an IAM user, an access key and the bucket while checks are off, then
turns them on through moto's `/moto-api/reset-auth` endpoint (moto 5). From
then on a wrong access key gets `InvalidAccessKeyId` and a wrong secret
`SignatureDoesNotMatch`, both HTTP 403: the error codes the S3 API defines
for these cases.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import urllib.request
from pathlib import Path
from typing import Any

from ...secrets import AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, Secret
from .process import LOOPBACK, StandinError, StandinProcess, http_status

# Permissions of the user whose key the deployment gets: all of S3, nothing else.
S3_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}
IAM_USER = "zot-hetzner-sandbox"
CREDENTIALS_FILE = "s3-credentials.env"


class S3Server(StandinProcess):
    """moto's S3 server on 127.0.0.1 with one bucket and one access key.

    After start(), `access_key_id` and `secret_access_key` hold the key
    (Secret values) and `credentials_file` is a mode 0600 file with
    AWS_ACCESS_KEY_ID=... and AWS_SECRET_ACCESS_KEY=... lines, usable as the
    deployment's secrets file. With `check_credentials=False` moto takes any key.
    """

    name = "s3"

    def __init__(
        self,
        work_dir: Path,
        port: int | None = None,
        *,
        bucket: str = "zot-sandbox",
        region: str = "fsn1",
        check_credentials: bool = True,
    ) -> None:
        super().__init__(work_dir, port)
        self.bucket = bucket
        self.region = region
        self.check_credentials = check_credentials
        self.access_key_id: Secret | None = None
        self.secret_access_key: Secret | None = None

    @property
    def credentials_file(self) -> Path:
        return self.work_dir / CREDENTIALS_FILE

    def settings_overrides(
        self, guest_port: int | None = None, guest_host: str = LOOPBACK
    ) -> dict[str, object]:
        """Return settings fields that point a deployment at this server (path-style URLs).

        NOTE: zot runs in a container on podman's bridge network, from where
        the guest's 127.0.0.1 is not reachable. The S3 port must then be exposed
        on a guest address the container can reach (e.g. the bridge gateway),
        passed as `guest_host`.
        """
        return {
            "storage.endpoint": f"http://{guest_host}:{guest_port or self.require_port()}",
            "storage.path_style": True,
            "storage.bucket": self.bucket,
            "storage.region": self.region,
        }

    def secret_environment(self) -> dict[str, Secret]:
        """Return the AWS_* secrets a deployment reads, as Secret values."""
        if self.access_key_id is None or self.secret_access_key is None:
            raise StandinError("the S3 stand-in has no access key yet; call start() first")
        return {
            AWS_ACCESS_KEY_ID: self.access_key_id,
            AWS_SECRET_ACCESS_KEY: self.secret_access_key,
        }

    # --- process ------------------------------------------------------------------------

    def command(self) -> list[str]:
        # moto and boto3 come with the project's sandbox extra; a moto_server
        # found elsewhere on PATH would fail later on the boto3 import.
        moto_server = Path(sys.executable).with_name("moto_server")
        if not moto_server.exists() or importlib.util.find_spec("boto3") is None:
            raise StandinError(
                "the S3 stand-in needs moto and boto3 in this environment; install the "
                "sandbox extra: pip install -e '.[sandbox]'"
            )
        return [str(moto_server), "-H", LOOPBACK, "-p", str(self.require_port())]

    def probe(self) -> bool:
        return http_status(f"{self.url}/moto-api/data.json") == 200

    def after_ready(self) -> None:
        # Setup requests run before checks are on, so any key is accepted for them.
        setup = {"aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
        iam = self._client("iam", **setup)
        iam.create_user(UserName=IAM_USER)
        iam.put_user_policy(
            UserName=IAM_USER, PolicyName="s3-all", PolicyDocument=json.dumps(S3_POLICY)
        )
        key = iam.create_access_key(UserName=IAM_USER)["AccessKey"]
        self.access_key_id = Secret(key["AccessKeyId"])
        self.secret_access_key = Secret(key["SecretAccessKey"])
        self._write_credentials_file()
        self.client().create_bucket(
            Bucket=self.bucket, CreateBucketConfiguration={"LocationConstraint": self.region}
        )
        if self.check_credentials:
            self._enforce_auth()

    def _write_credentials_file(self) -> None:
        assert self.access_key_id is not None and self.secret_access_key is not None
        temporary = self.credentials_file.with_suffix(".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(f"{AWS_ACCESS_KEY_ID}={self.access_key_id.reveal()}\n")
            handle.write(f"{AWS_SECRET_ACCESS_KEY}={self.secret_access_key.reveal()}\n")
        temporary.replace(self.credentials_file)

    def _enforce_auth(self) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        request = urllib.request.Request(  # noqa: S310 (our own http:// URL)
            f"{self.url}/moto-api/reset-auth",
            data=b"0",
            method="POST",
            # A form content type (urllib's default) makes Flask move the body out of
            # request.data, where moto reads the number.
            headers={"Content-Type": "text/plain"},
        )
        with opener.open(request, timeout=10) as response:
            if response.status != 200:
                raise StandinError(
                    f"turning on credential checks in moto failed: HTTP {response.status}"
                )

    def stop(self) -> None:
        super().stop()
        self.credentials_file.unlink(missing_ok=True)

    # --- clients ------------------------------------------------------------------------

    def _client(self, service: str, **credentials: str) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
            **credentials,
        )

    def client(
        self, access_key_id: Secret | None = None, secret_access_key: Secret | None = None
    ) -> Any:
        """Return a boto3 S3 client for this server, with the stand-in's key unless given one."""
        key_id = access_key_id or self.access_key_id
        secret = secret_access_key or self.secret_access_key
        if key_id is None or secret is None:
            raise StandinError("the S3 stand-in has no access key yet; call start() first")
        return self._client(
            "s3", aws_access_key_id=key_id.reveal(), aws_secret_access_key=secret.reveal()
        )

    def list_objects(self, prefix: str = "") -> list[str]:
        """Return the keys in the bucket that start with `prefix`, in S3's order."""
        keys: list[str] = []
        paginator = self.client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return keys
