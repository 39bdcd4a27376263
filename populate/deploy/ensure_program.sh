#!/usr/bin/env bash
# Install a Debian package with apt-get when its program is missing, saying so (as local_db.sh does
# for the database servers).  Used by `make test` for Graphviz, which dj.Diagram needs to draw, and
# headless Chromium, which the report test drives.
#
#   populate/deploy/ensure_program.sh dot graphviz
set -euo pipefail
program=${1:?usage: ensure_program.sh PROGRAM DEBIAN_PACKAGE}
package=${2:?usage: ensure_program.sh PROGRAM DEBIAN_PACKAGE}
if command -v "$program" >/dev/null 2>&1; then
  exit 0
fi
echo "ensure_program: $program not found; installing Debian package $package" >&2
if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
$SUDO apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$package" >&2
