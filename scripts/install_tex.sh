#!/usr/bin/env bash
# Install the smallest TeX Live set that Sphinx's LaTeX builder needs for `latex_engine: pdflatex`
# (what `make pdf` runs), with apt-get, and only when something is missing.
#
#   latexmk                    drives pdflatex/makeindex (Sphinx's generated Makefile calls it)
#   texlive-latex-recommended  pdflatex, LaTeX base, amsmath, hyperref, geometry, babel, ...
#   texlive-latex-extra        fncychap, tabulary, capt-of, needspace, varwidth, wrapfig, titlesec, ...
#   texlive-fonts-recommended  Times/Helvetica/Courier clones + T1 metrics
#   tex-gyre                   TeX Gyre Termes/Heros/Cursor: Sphinx >= 6's default fonts under pdflatex
# texlive-fonts-extra (~1 GB) and texlive-xetex are NOT needed for pdflatex.
#
# Usage: bash scripts/install_tex.sh        (root, or sudo without password)
set -euo pipefail

PKGS=(latexmk texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended tex-gyre)
# one style file per package above (plus the ones Sphinx's sphinx.sty loads) to detect a partial install
STY=(fncychap.sty tabulary.sty capt-of.sty needspace.sty varwidth.sty wrapfig.sty upquote.sty
     cmap.sty tgtermes.sty tgheros.sty tgcursor.sty titlesec.sty framed.sty fancyvrb.sty float.sty
     amsmath.sty hyperref.sty geometry.sty)

missing() {
  command -v pdflatex >/dev/null 2>&1 || { echo pdflatex; return 0; }
  command -v latexmk >/dev/null 2>&1 || { echo latexmk; return 0; }
  command -v kpsewhich >/dev/null 2>&1 || { echo kpsewhich; return 0; }
  local s
  for s in "${STY[@]}"; do
    kpsewhich "$s" >/dev/null 2>&1 || { echo "$s"; return 0; }
  done
  return 1
}

if ! what=$(missing); then
  echo "install_tex: TeX Live for pdflatex is complete ($(pdflatex --version | head -1))"
  exit 0
fi
echo "install_tex: '$what' is missing; installing: ${PKGS[*]}"

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    echo "install_tex: need root (or passwordless sudo) to run apt-get; as root run:" >&2
    echo "  apt-get update && apt-get install -y --no-install-recommends ${PKGS[*]}" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_tex: no apt-get here; install a TeX distribution providing pdflatex, latexmk and" >&2
  echo "  the styles ${STY[*]} (e.g. TeX Live with collections latexrecommended, latexextra, fontsrecommended)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
APT=("${SUDO[@]}" apt-get -y -q -o DPkg::Lock::Timeout=600)
start=$(date +%s)
if ! "${APT[@]}" install --no-install-recommends "${PKGS[@]}"; then
  echo "install_tex: install failed; refreshing the package lists and retrying" >&2
  "${APT[@]}" update
  "${APT[@]}" install --no-install-recommends "${PKGS[@]}"
fi
echo "install_tex: installed in $(( $(date +%s) - start )) s"

if what=$(missing); then
  echo "install_tex: still missing after install: $what" >&2
  exit 1
fi
echo "install_tex: ok ($(pdflatex --version | head -1))"
