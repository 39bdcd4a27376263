"""Static checks of the deployment files, run here without Docker or SLURM.

docker-compose.yml against the Compose specification's JSON schema and the stack's rules (roles,
secrets, thread limits, GPU image); the SLURM template's directives, and that the worker it starts
receives the batch shell's SIGTERM; .env.example, .dockerignore and the Dockerfile's install steps.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")

COMPOSE = REPO / "docker-compose.yml"
SPEC = REPO / "tests" / "data" / "compose-spec.json"
SBATCH = REPO / "populate" / "deploy" / "slurm_worker.sbatch"
PIPELINE_SERVICES = ("scheduler", "worker", "gpu-worker", "notebook")

_VARIABLE = re.compile(
    r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])((?:[^{}]|\{[^{}]*\})*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(value, env: dict[str, str]):
    """Compose's variable interpolation (``$$``, ``${V}``, ``${V:-d}``, ``${V-d}``, ``${V:?e}``,
    ``${V?e}``, ``${V:+a}``, ``$V``) over every string of a loaded compose document."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def replace(match):
        escaped, name, operator, argument, bare = match.groups()
        if escaped:
            return "$"
        name = name or bare
        present, current = name in env, env.get(name, "")
        if operator in (":-", "-"):
            use_default = not current if operator == ":-" else not present
            return interpolate(argument, env) if use_default else current
        if operator in (":?", "?"):
            if (not current) if operator == ":?" else (not present):
                raise KeyError(f"{name}: {argument}")
            return current
        if operator == ":+":
            return interpolate(argument, env) if current else ""
        return current

    return _VARIABLE.sub(replace, value)


def env_example() -> dict[str, str]:
    pairs = [
        line.split("=", 1)
        for line in (REPO / ".env.example").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    return {k.strip(): v.strip() for k, v in pairs}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(SPEC.read_text())
    return jsonschema.Draft7Validator(schema)


def _errors(validator, document) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_interpolation_follows_compose_rules():
    env = {"SET": "x", "EMPTY": ""}
    assert (
        interpolate("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} $$HOME ${SET:+a}${EMPTY:+a}", env) == "x d  d $HOME a"
    )
    with pytest.raises(KeyError, match="UNSET"):
        interpolate("${UNSET:?set it}", env)


def test_compose_file_follows_the_compose_specification(compose, validator):
    assert not _errors(validator, compose)
    # as docker compose reads it: with .env.example's values, and with no .env at all (defaults)
    for env in (env_example(), {}):
        assert not _errors(validator, interpolate(compose, env)), env
    # the check can fail: a misspelt key or a wrong type is refused
    broken = interpolate(compose, {})
    broken["services"]["worker"]["deploy"]["resourses"] = broken["services"]["worker"]["deploy"].pop("resources")
    broken["services"]["db"]["ports"] = "3306:3306"  # a list is required
    assert len(_errors(validator, broken)) >= 2


def test_services_log_in_as_the_pipeline_roles_with_passwords_from_secrets(compose):
    stack = interpolate(compose, {})
    services = stack["services"]
    logins = {name: services[name]["environment"].get("DJ_USER") for name in PIPELINE_SERVICES}
    assert logins == {"scheduler": "worker", "worker": "worker", "gpu-worker": "worker", "notebook": "notebook"}
    for name in PIPELINE_SERVICES:
        password = {
            s["source"]
            for s in services[name]["secrets"]
            if isinstance(s, dict) and s["target"] == "/run/secrets/datajoint/database.password"
        }
        assert password == ({"member_password"} if name == "notebook" else {"worker_password"}), name
    # no password, key or token in any environment; every secret used is defined as a file
    for name, service in services.items():
        environment = service.get("environment", {})
        assert not [
            k for k in environment if re.search(r"PASS|SECRET|TOKEN|ACCESS_KEY", k) and not k.endswith("_FILE")
        ], name
        assert "secret_key" not in environment.get("DJ_STORES", "") and "access_key" not in environment.get(
            "DJ_STORES", ""
        )
        for secret in service.get("secrets", []):
            source = secret["source"] if isinstance(secret, dict) else secret
            assert source in stack["secrets"] and "file" in stack["secrets"][source], (name, source)
    # the root password reaches only the database and the set-up
    root = {
        name
        for name, s in services.items()
        for x in s.get("secrets", [])
        if (x["source"] if isinstance(x, dict) else x) == "db_root_password"
    }
    assert root == {"db", "setup"}
    setup = services["setup"]
    assert setup["command"] == ["sh", "populate/deploy/stack_setup.sh"]
    script = (REPO / "populate" / "deploy" / "stack_setup.sh").read_text()
    assert "roles create" in script and "roles user" in script and "populate setup" in script
    assert {setup["environment"][k] for k in ("DB_ADMIN_USER", "DB_WORKER_USER", "DB_MEMBER_USER")} == {
        "setup",
        "worker",
        "notebook",
    }


def test_workers_get_a_thread_limit_from_their_cpu_limit_and_gpu_workers_a_cuda_image(compose):
    for env in ({}, {"CPU_WORKER_CPUS": "3", "GPU_WORKER_CPUS": "6"}):
        services = interpolate(compose, env)["services"]
        worker, gpu = services["worker"], services["gpu-worker"]
        assert worker["environment"]["OMP_NUM_THREADS"] == worker["deploy"]["resources"]["limits"]["cpus"]
        assert gpu["environment"]["OMP_NUM_THREADS"] == gpu["deploy"]["resources"]["limits"]["cpus"]
    services = interpolate(compose, {})["services"]
    cpu_image, gpu_image = services["worker"]["image"], services["gpu-worker"]["image"]
    assert cpu_image != gpu_image
    assert "/whl/cu" in services["gpu-worker"]["build"]["args"]["TORCH_INDEX"]
    assert "TORCH_INDEX" not in services["worker"]["build"].get("args", {})  # the Dockerfile's CPU default
    assert services["gpu-worker"]["command"][-2:] == ["--device", "cuda:0"]
    assert services["worker"]["command"][-2:] == ["--device", "cpu"]
    assert services["db"]["image"].startswith("mysql:8.4")
    for name in ("db", "minio", "notebook"):
        assert all(str(p).startswith("127.0.0.1:") for p in services[name]["ports"]), name
    for name in ("setup", *PIPELINE_SERVICES):
        assert "GIT_COMMIT" in services[name]["build"]["args"], name


def test_one_gpu_worker_per_device_from_the_generator(compose, validator):
    sys.path.insert(0, str(REPO / "populate" / "deploy"))
    try:
        import gpu_services
    finally:
        sys.path.pop(0)
    override = gpu_services.gpu_services(["0", "1", "3"], compose)
    services = override["services"]
    assert list(services) == ["gpu-worker-0", "gpu-worker-1", "gpu-worker-3"]
    devices = [s["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] for s in services.values()]
    assert devices == [["0"], ["1"], ["3"]]
    assert all("profiles" not in s for s in services.values())
    merged = dict(compose, services={**compose["services"], **services})
    assert not _errors(validator, interpolate(merged, {}))
    out = subprocess.run(
        [sys.executable, str(REPO / "populate" / "deploy" / "gpu_services.py"), "0", "x"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "GPU index 'x'" in out.stderr


def test_env_example_names_no_missing_file_and_only_variables_compose_uses():
    text = (REPO / ".env.example").read_text()
    paths = set(re.findall(r"(?<![\w/.])((?:docs|populate|notebooks|tests|schemas|pipeline)/[\w./-]+\w)", text))
    assert "docs/running_at_scale.md" in paths
    assert not [p for p in paths if not (REPO / p).exists()], paths
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", COMPOSE.read_text()))
    assert set(env_example()) <= used, set(env_example()) - used
    assert not re.search(r"PASS|SECRET_KEY|TOKEN=", "\n".join(env_example())), "no secrets in .env.example"


def test_dockerignore_keeps_local_state_out_of_the_image():
    ignored = [
        line.strip().rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in (".git", ".venv", ".local", ".store", ".secrets", ".env"):
        assert path in ignored, path
    dockerfile = (REPO / "Dockerfile").read_text()
    copied = [p for line in re.findall(r"^COPY (.+)$", dockerfile, re.M) for p in line.split()[:-1]]
    assert copied and all((REPO / p).exists() and p.rstrip("/") not in ignored for p in copied), copied
    # the commit is baked in: a build without it stops, and the image's code_version reads it
    assert re.search(r"^ARG GIT_COMMIT", dockerfile, re.M) and "ENV PIPELINE_GIT_COMMIT=$GIT_COMMIT" in dockerfile


def test_code_version_of_a_copy_without_git_is_the_baked_commit(tmp_path):
    shutil.copytree(REPO / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    probe = "import pipeline; print(pipeline.code_version())"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    baked = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=dict(
            env,
            PYTHONPATH=str(tmp_path),
            PIPELINE_GIT_COMMIT="0123456789ab",
            GIT_CEILING_DIRECTORIES=str(tmp_path.parent),
        ),
    )
    plain = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=dict(env, PYTHONPATH=str(tmp_path), GIT_CEILING_DIRECTORIES=str(tmp_path.parent)),
    )
    assert baked.stdout.strip().endswith("+0123456789ab"), baked.stderr
    assert "+" not in plain.stdout.strip(), plain.stderr


# --------------------------------------------------------------------------------------------------
# SLURM
# --------------------------------------------------------------------------------------------------


def sbatch_directives() -> dict[str, str]:
    directives = {}
    for line in SBATCH.read_text().splitlines():
        if line.startswith("#SBATCH "):
            option = line.split(None, 1)[1].strip()
            name, _, value = option.partition("=")
            directives[name] = value
        elif line.strip() and not line.startswith("#"):
            break  # SLURM reads directives only before the first command
    return directives


def test_slurm_directives_signal_the_batch_shell_before_the_time_limit():
    directives = sbatch_directives()
    match = re.fullmatch(r"B:TERM@(\d+)", directives["--signal"])
    assert match, directives["--signal"]
    stop_timeout = int(re.search(r"WORKER_STOP_TIMEOUT:-(\d+)", SBATCH.read_text()).group(1))
    assert int(match.group(1)) > stop_timeout + 30, "the job must end its job before SIGKILL at the limit"
    assert directives["--output"].startswith("logs/") and directives["--ntasks"] == "1"
    assert "KillWait" in SBATCH.read_text()


def _fake(path: Path, body: str) -> Path:
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)
    return path


def test_the_worker_receives_the_sigterm_sent_to_the_batch_shell(tmp_path):
    """--signal=B: signals the batch shell's process only: the script must exec the worker."""
    log = tmp_path / "worker.log"
    python = _fake(
        tmp_path / "python",
        f"""echo "args $*" >> {log}
trap 'echo "got TERM" >> {log}; exit 0' TERM
echo started >> {log}
while :; do sleep 0.05; done
""",
    )
    env = dict(
        os.environ,
        DJ_HOST="db.example",
        PIPELINE_PREFIX="v1",
        PYTHON=str(python),
        SLURM_SUBMIT_DIR=str(tmp_path),
        SLURM_CPUS_PER_TASK="3",
    )
    shell = subprocess.Popen(["bash", str(SBATCH)], env=env)
    try:
        deadline = time.monotonic() + 20
        while "started" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
            time.sleep(0.05)
        shell.send_signal(signal.SIGTERM)  # what SLURM does with B:TERM: the batch shell's pid
        assert shell.wait(timeout=20) == 0
    finally:
        if shell.poll() is None:
            shell.kill()
    text = log.read_text()
    assert "got TERM" in text, text
    assert "args -m populate worker --device cuda:0 --idle-exit 600 --stop-timeout 20" in text


def test_submission_creates_the_log_folder_before_sbatch_opens_the_log(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "sbatch.txt"
    _fake(bin_dir / "sbatch", f'[ -d logs ] && echo "logs exists; args $*" > {record}\n')
    work = tmp_path / "submit"
    work.mkdir()
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    subprocess.run(
        [str(REPO / "populate" / "deploy" / "slurm_submit.sh"), "--array=0-3"], cwd=work, env=env, check=True
    )
    assert record.read_text().startswith("logs exists; args --array=0-3 ")
    assert record.read_text().strip().endswith("slurm_worker.sbatch")


# --------------------------------------------------------------------------------------------------
# The Dockerfile's install steps, resolved in a fresh venv without Docker
# --------------------------------------------------------------------------------------------------


def dockerfile_install_steps() -> list[list[str]]:
    """The arguments of each ``pip install`` of the Dockerfile, with its ARG defaults filled in."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    args = dict(re.findall(r"^ARG (\w+)=(\S*)$", text, re.M))
    steps = []
    for command in re.findall(r"^RUN (.+)$", text, re.M):
        for part in command.split("&&"):
            words = part.split()
            if words[:2] == ["pip", "install"]:
                words = [re.sub(r"\$(\w+)", lambda m: args[m.group(1)], w.strip("'\"")) for w in words[2:]]
                steps.append(words)
    return steps


def test_the_image_installs_every_extra_but_the_tests():
    """The package step's extras are pyproject.toml's, less ``test``: the documented stack (import
    and export of NWB, suite2p, robustness, S3) runs in the image."""
    import tomllib

    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    package_step = dockerfile_install_steps()[-1]
    installed = re.fullmatch(r"\.\[([\w,-]+)\]", package_step[1])
    assert package_step[0] == "-e" and installed, package_step
    assert set(installed.group(1).split(",")) == extras - {"test"}


@pytest.mark.slow
def test_dockerfile_install_steps_resolve_in_a_fresh_venv(tmp_path):
    """``pip install --dry-run`` of the Dockerfile's steps: every requirement resolves, and the
    package step keeps the torch the first step installed.  torch's own wheel index is not
    reachable from this machine, so the torch step resolves the same version from the package
    index configured here (PyPI or local wheels)."""
    steps = dockerfile_install_steps()
    assert len(steps) == 2, steps
    torch_step, package_step = steps
    assert torch_step[0] == "--index-url" and torch_step[2].startswith("torch==")
    assert package_step[0] == "-e" and package_step[1].startswith(".[")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    report = tmp_path / "report.json"
    # the package step in the Dockerfile's layout: pyproject and README, empty packages
    context = tmp_path / "context"
    for folder in ("pipeline", "schemas", "populate"):
        (context / folder).mkdir(parents=True)
        (context / folder / "__init__.py").touch()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, context / name)
    result = subprocess.run(
        [*pip, "install", "--dry-run", "--quiet", "--report", str(report), torch_step[2], *package_step],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    installed = {
        item["metadata"]["name"].lower(): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    wanted = torch_step[2].split("==")[1]
    assert installed["torch"].split("+")[0] == wanted
    for name in ("v1pipeline", "datajoint", "foolbox", "s3fs", "jupyterlab", "cryptography", "pymysql"):
        assert name in installed, name


# --------------------------------------------------------------------------------------------------
# The stack's set-up script, on the test server
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow  # about 3 minutes: a full `setup` and the role grants in fresh processes
def test_stack_setup_creates_the_role_logins_and_the_tables(db, tmp_path):
    """populate/deploy/stack_setup.sh as the compose `setup` service runs it, with its secrets in a
    folder: afterwards the worker login writes computed tables only and the member login reads only."""
    import secrets as tokens

    import datajoint as dj

    from tests.conftest import RUN_ID

    # not "test_...": MariaDB's default install lets everyone write test\_% databases
    prefix = f"stack{RUN_ID}"
    users = {"admin": f"s{RUN_ID}adm", "worker": f"s{RUN_ID}wrk", "member": f"s{RUN_ID}mem"}
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / "db_root_password").write_text(os.environ.get("DJ_PASS", "") + "\n")
    passwords = {role: tokens.token_urlsafe(12) for role in users}
    for role, password in passwords.items():
        (folder / f"{role}_password").write_text(password + "\n")
    host = (
        "127.0.0.1"
        if db.adapter.backend == "mysql" and dj.config["database.host"] in ("127.0.0.1", "localhost")
        else "%"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DJ_PASS", "DJ_USER")}
    env.update(
        PIPELINE_PREFIX=prefix,
        SECRETS_DIR=str(folder),
        DB_ROOT_USER=os.environ.get("DJ_USER", "root"),
        DB_ADMIN_USER=users["admin"],
        DB_WORKER_USER=users["worker"],
        DB_MEMBER_USER=users["member"],
        DB_LOGIN_HOST=host,
        DJ_CREATE_TABLES="false",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    root = dict(env, DJ_USER=env["DB_ROOT_USER"], DJ_PASS=os.environ.get("DJ_PASS", ""))

    def python(code: str, login: dict) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env=login, capture_output=True, text=True, timeout=300
        )

    try:
        result = subprocess.run(
            ["sh", str(REPO / "populate" / "deploy" / "stack_setup.sh")],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        assert "roles, logins" in result.stdout
        assert not any(p in result.stdout + result.stderr for p in passwords.values()), "a password was printed"
        probe = """
import datajoint as dj, schemas.recordings as r, schemas.operations as o
import schemas; schemas.activate()
print("scans", len(r.Scan()))
try:
    r.Animal.insert1(dict(animal_id=99, species="mouse"), ignore_extra_fields=True)
    print("manual insert: allowed")
except Exception as err:
    print("manual insert: refused", type(err).__name__)
try:
    o.Worker.delete_quick()
    print("operations write: allowed")
except Exception as err:
    print("operations write: refused", type(err).__name__)
"""
        outputs = {}
        for role in ("worker", "member"):
            out = python(probe, dict(env, DJ_USER=users[role], DJ_PASS=passwords[role]))
            assert out.returncode == 0 and "scans 0" in out.stdout, out.stderr[-2000:]
            outputs[role] = out.stdout
        assert "manual insert: refused" in outputs["worker"] and "operations write: allowed" in outputs["worker"]
        assert "manual insert: refused" in outputs["member"] and "operations write: refused" in outputs["member"]
    finally:
        python("import schemas; schemas.drop_all()", root)
        for name in users.values():
            subprocess.run(
                [sys.executable, "-m", "populate", "roles", "drop-user", name, "--host", host],
                cwd=REPO,
                env=root,
                capture_output=True,
                timeout=120,
            )
        subprocess.run(
            [sys.executable, "-m", "populate", "roles", "drop"], cwd=REPO, env=root, capture_output=True, timeout=120
        )
