#!/usr/bin/env bash
# Install the smallest TeX Live set that Sphinx's LaTeX builder needs for `latex_engine: xelatex`
# (what `make pdf` runs; _config.yml says why xelatex), with apt-get, and only when something is missing.
#
#   latexmk                    drives xelatex/makeindex (Sphinx's generated Makefile calls it)
#   texlive-xetex              xelatex + fontspec/polyglossia support (pulls texlive-latex-base/-extra)
#   texlive-latex-recommended  LaTeX base packages: amsmath, hyperref, geometry, fontspec, upquote, ...
#   texlive-latex-extra        fncychap, tabulary, capt-of, needspace, varwidth, wrapfig, titlesec, framed, polyglossia
#   texlive-fonts-recommended  the ZapfDingbats metrics (pzdr.tfm) that Sphinx's pifont symbols need
#   fonts-freefont-otf         FreeSerif/FreeSans/FreeMono, Sphinx's xelatex fonts: Greek, math symbols, arrows
# Measured on Debian bookworm (2 cores): about 80 MB to download, 360 MB on disk, ~70 s to install;
# `make pdf PROFILE=smoke` then takes ~45 s. texlive-fonts-extra (~1 GB), tex-gyre, xindy and
# texlive-lang-* are NOT needed.
#
# Usage: bash scripts/install_tex.sh        (root, or sudo without password)
set -euo pipefail

PKGS=(latexmk texlive-xetex texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended fonts-freefont-otf)
# one style file per package above (plus the ones Sphinx's sphinx.sty loads) to detect a partial install
STY=(fncychap.sty tabulary.sty capt-of.sty needspace.sty varwidth.sty wrapfig.sty upquote.sty
     titlesec.sty framed.sty fancyvrb.sty float.sty amsmath.sty hyperref.sty geometry.sty
     fontspec.sty polyglossia.sty pzdr.tfm)
FONTS=(FreeSerif FreeSans FreeMono)

missing() {
  command -v xelatex >/dev/null 2>&1 || { echo xelatex; return 0; }
  command -v latexmk >/dev/null 2>&1 || { echo latexmk; return 0; }
  command -v kpsewhich >/dev/null 2>&1 || { echo kpsewhich; return 0; }
  command -v fc-list >/dev/null 2>&1 || { echo fc-list; return 0; }
  local s f
  for s in "${STY[@]}"; do
    kpsewhich "$s" >/dev/null 2>&1 || { echo "$s"; return 0; }
  done
  for f in "${FONTS[@]}"; do
    [ -n "$(fc-list ":family=$f" file)" ] || { echo "font $f"; return 0; }
  done
  return 1
}

if ! what=$(missing); then
  echo "install_tex: TeX Live for xelatex is complete ($(xelatex --version | head -1))"
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
  echo "install_tex: no apt-get here; install a TeX distribution providing xelatex, latexmk and" >&2
  echo "  the styles ${STY[*]} (e.g. TeX Live with collections xetex, latexrecommended, latexextra," >&2
  echo "  fontsrecommended) and the GNU FreeFont OpenType fonts (${FONTS[*]})" >&2
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
echo "install_tex: ok ($(xelatex --version | head -1))"
