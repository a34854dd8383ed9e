#!/usr/bin/env bash
# Install headless Chromium (Debian package `chromium`) for the book's browser test
# (tests/test_book.py), with apt-get, only when it is missing. Also installs a basic font so that
# text renders in screenshots.
#
# Usage: bash scripts/install_chromium.sh   (root, or sudo without password)
# Prints the browser path on success; exits non-zero with the command to run otherwise.
set -euo pipefail

find_browser() {
  local b
  for b in "${CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser /usr/bin/google-chrome; do
    if [ -n "$b" ] && [ -x "$b" ]; then echo "$b"; return 0; fi
  done
  return 1
}

if b=$(find_browser); then
  echo "$b"
  exit 0
fi

PKGS=(chromium fonts-dejavu-core)
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    echo "install_chromium: need root (or passwordless sudo); as root run:" >&2
    echo "  apt-get update && apt-get install -y --no-install-recommends ${PKGS[*]}" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_chromium: no apt-get here; install Chromium and set CHROMIUM=/path/to/chromium" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
APT=("${SUDO[@]}" apt-get -y -q -o DPkg::Lock::Timeout=600)
start=$(date +%s)
{
  if ! "${APT[@]}" install --no-install-recommends "${PKGS[@]}"; then
    echo "install_chromium: install failed; refreshing the package lists and retrying"
    "${APT[@]}" update
    "${APT[@]}" install --no-install-recommends "${PKGS[@]}"
  fi
} >&2
echo "install_chromium: installed in $(( $(date +%s) - start )) s" >&2
find_browser || { echo "install_chromium: chromium not found after install" >&2; exit 1; }
