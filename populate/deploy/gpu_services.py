"""Write a compose override with one GPU worker service per host GPU.

    python3 populate/deploy/gpu_services.py 0 1 2 3 > compose.gpus.yaml
    docker compose -f docker-compose.yml -f compose.gpus.yaml up -d

Each service ``gpu-worker-<i>`` is the ``gpu-worker`` service of docker-compose.yml with host GPU
``<i>`` reserved (it is ``cuda:0`` inside the container) and without the ``gpu`` profile, so that
``up -d`` starts it.  Compose cannot loop over devices itself, and merging a service with
``extends`` would append device lists instead of replacing them, hence a generated file.  Only
the standard library and PyYAML (installed with the tests) are used.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def gpu_services(devices: list[str], compose: dict) -> dict:
    """The override document: one service per device index, built from ``compose``'s gpu-worker."""
    template = compose["services"]["gpu-worker"]
    services = {}
    for device in devices:
        if not device.isdigit():
            raise ValueError(f"GPU index {device!r}: give host GPU indices such as 0 1 2 3")
        service = copy.deepcopy(template)
        service.pop("profiles", None)
        service["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] = [device]
        services[f"gpu-worker-{device}"] = service
    return {"services": services}


def main(argv: list[str] | None = None) -> int:
    import yaml

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("devices", nargs="+", help="host GPU indices, e.g. 0 1 2 3")
    parser.add_argument("--compose", type=Path, default=COMPOSE, help="the compose file (default: the repository's)")
    args = parser.parse_args(argv)
    try:
        document = gpu_services(args.devices, yaml.safe_load(args.compose.read_text()))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sys.stdout.write("# written by populate/deploy/gpu_services.py; one GPU worker per host GPU\n")
    sys.stdout.write(yaml.safe_dump(document, sort_keys=False, width=120))
    return 0


if __name__ == "__main__":
    sys.exit(main())
