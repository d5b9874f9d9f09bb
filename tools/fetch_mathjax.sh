#!/usr/bin/env bash
# Put MathJax into nbs/_vendor/mathjax/ (git-ignored), so that the book serves its math renderer from
# its own _static/ folder and a page opened offline requests nothing from another host.
# Fetched once from the npm registry (`npm pack`, nothing is installed or run) and then reused;
# bump MATHJAX_VERSION to update. nbs/_ext/dl4smlm_book.py points Sphinx's `mathjax_path` at it.
set -euo pipefail
cd "$(dirname "$0")/.."
MATHJAX_VERSION=3.2.2
dest=nbs/_vendor/mathjax

if [ -f "$dest/es5/tex-mml-chtml.js" ] && [ "$(cat "$dest/VERSION" 2>/dev/null)" = "$MATHJAX_VERSION" ]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "tools/fetch_mathjax.sh: npm not found; install Node.js and npm (Debian/Ubuntu: apt-get install npm) to fetch MathJax for the book" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
( cd "$tmp" && npm pack "mathjax@$MATHJAX_VERSION" --silent --no-fund --no-audit >/dev/null )
tar -xzf "$tmp"/mathjax-"$MATHJAX_VERSION".tgz -C "$tmp" package/es5 package/LICENSE
rm -f "$tmp/package/es5/latest.js"   # a loader that fetches "the latest MathJax" from a CDN: never wanted here
echo "$MATHJAX_VERSION" > "$tmp/package/VERSION"
mkdir -p "$(dirname "$dest")"
rm -rf "$dest.tmp" && mv "$tmp/package" "$dest.tmp"
rm -rf "$dest" && mv "$dest.tmp" "$dest"
echo "fetched MathJax $MATHJAX_VERSION into $dest"
