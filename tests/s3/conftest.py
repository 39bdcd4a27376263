"""Fixtures of the S3 store tests: moto's S3 server for the session, and a prefix of their own whose
store is that server's bucket, configured as docker-compose.yml configures it.

The tests run the command line in child processes exactly as a compose service runs it (``DJ_STORES``
in the environment, the keys in DataJoint's secrets folder), and read results back in this process
through the same settings.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PREFIX
from tests.populate.commands import child_env


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on a loopback port, with a bucket and a signing user; stopped at the end."""
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("s3fs") is None:
        pytest.fail(
            "the S3 store tests need moto's server and s3fs: pip install -e '.[test,s3]' (the test extra "
            "installs moto[server])"
        )
    from tests.s3 import moto_store

    server = moto_store.start()
    yield server
    server.stop()


@dataclass
class S3Pipeline:
    """One prefix whose ``pipeline`` store is the moto bucket; ``cli`` runs ``python -m populate`` as compose does."""

    server: object
    prefix: str
    project: Path

    @property
    def location(self) -> str:
        return self.prefix

    def env(self, **extra) -> dict:
        settings = dict(PIPELINE_PREFIX=self.prefix, DJ_STORES=self.server.stores_json(self.location))
        return child_env(**{**settings, **extra})

    def cli(self, *args, project: Path | None = None, env: dict | None = None, timeout: float = 300):
        """``python -m populate ARGS`` in the project folder (DataJoint finds its secrets there)."""
        return subprocess.run(
            [sys.executable, "-m", "populate", *map(str, args)],
            cwd=project or self.project,
            env=env or self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def objects(self) -> set[str]:
        """Keys of every object of this prefix's store in the bucket."""
        return self.server.keys(prefix=self.location + "/")


def _store_spec(stores_json: str, project: Path) -> dict:
    """The store's settings as DataJoint builds them at start: ``DJ_STORES``, then the secrets folder next to
    the project's ``datajoint.json`` fills in the keys."""
    from datajoint import settings

    spec = json.loads(stores_json)["pipeline"]
    secrets = settings.find_secrets_dir(project / "datajoint.json")
    for attribute in ("access_key", "secret_key"):
        spec.setdefault(attribute, settings.read_secret_file(secrets, f"stores.pipeline.{attribute}"))
    return spec


@pytest.fixture(scope="module")
def s3(db, request, tmp_path_factory):
    """This module's prefix ``{run prefix}_s3`` with every table declared and its store in the bucket; this
    process's tables are bound to it until the module ends (then to the run's prefix and store again)."""
    import datajoint as dj

    import schemas
    from schemas import db as settings

    if settings.backend() != "postgresql":
        # `make test` runs the database tests on PostgreSQL and again on MariaDB; the store's code paths
        # do not depend on the database, and one pass keeps CI's time down.
        pytest.skip("the S3 store tests run in the PostgreSQL pass")
    s3_server = request.getfixturevalue("s3_server")  # started only where the tests run
    pipeline = S3Pipeline(s3_server, f"{PREFIX}_s3", s3_server.project(tmp_path_factory.mktemp("project")))
    saved = dict(dj.config.stores[settings.STORE])
    dj.config.stores[settings.STORE] = _store_spec(s3_server.stores_json(pipeline.location), pipeline.project)
    try:
        settings.check_store()
        schemas.declare_all(pipeline.prefix)
        yield pipeline
    finally:
        schemas.drop_all(pipeline.prefix)
        dj.config.stores[settings.STORE] = saved
        schemas.activate(PREFIX)
