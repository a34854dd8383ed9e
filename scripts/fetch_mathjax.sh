#!/usr/bin/env bash
# Put a local copy of MathJax 3 (its `es5/` build: tex-chtml.js, components, output/chtml fonts)
# under book/_static/mathjax/ so that the HTML book renders equations offline.
# _config.yml points Sphinx's `mathjax_path` at mathjax/tex-chtml.js inside html_static_path.
# The copy is git-ignored; it comes from the npm registry (the only network this needs).
#
# Usage: bash scripts/fetch_mathjax.sh [--force]
set -euo pipefail

VERSION=3.2.2
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/book/_static/mathjax"
STAMP="$DEST/.version"

if [ "${1:-}" != "--force" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$VERSION" ] \
   && [ -f "$DEST/tex-chtml.js" ]; then
  echo "fetch_mathjax: MathJax $VERSION already in ${DEST#"$ROOT"/}"
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "fetch_mathjax: npm is not installed; it is needed once to fetch mathjax@$VERSION." >&2
  echo "  Debian/Ubuntu: apt-get install -y npm   (or install Node.js from nodejs.org), then rerun" >&2
  echo "  Offline alternative: unpack mathjax-$VERSION.tgz (npm pack mathjax@$VERSION elsewhere)" >&2
  echo "  and copy its package/es5/ folder to ${DEST#"$ROOT"/}/" >&2
  exit 1
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
( cd "$TMP" && npm pack --silent "mathjax@$VERSION" >/dev/null )
tar -xzf "$TMP/mathjax-$VERSION.tgz" -C "$TMP"
test -f "$TMP/package/es5/tex-chtml.js" || { echo "fetch_mathjax: es5/tex-chtml.js not in the package" >&2; exit 1; }
# sre/ (the speech-rule engine, ~ several MB of locale maps) is only fetched on demand by the
# accessibility menu; keep it so that menu works offline too.
rm -rf "$DEST"
mkdir -p "$(dirname "$DEST")"
cp -r "$TMP/package/es5" "$DEST"
cp "$TMP/package/LICENSE" "$DEST/LICENSE"
echo "$VERSION" > "$STAMP"
echo "fetch_mathjax: MathJax $VERSION -> ${DEST#"$ROOT"/} ($(du -sh "$DEST" | cut -f1))"
