#!/usr/bin/env bash
# Install the Debian programs the test suite drives, when they are missing (`make test` runs this,
# as local_db.sh installs the database servers): headless Chromium for the report's browser test.
set -euo pipefail
say() { echo "test_tools: $*" >&2; }
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[[ ${#missing[@]} -eq 0 ]] && exit 0
say "installing Debian package(s) ${missing[*]}"
if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
$SUDO apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >&2
