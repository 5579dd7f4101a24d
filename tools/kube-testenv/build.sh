#!/usr/bin/env bash
# Builds kube-testenv (embedded etcd + kube-apiserver + kube-controller-manager)
# unless a binary for the current go.sum already exists.
# Usage: tools/kube-testenv/build.sh [OUTPUT]
# Default OUTPUT: <repo>/target/kube-testenv/kube-testenv-<first 16 hex of sha256(go.sum)>
# The last line on stdout is the binary's absolute path; build output goes to stderr.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
sum="$(sha256sum go.sum | cut -c1-16)"
out="${1:-../../target/kube-testenv/kube-testenv-$sum}"
mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
if [ ! -x "$out" ]; then
  echo "building $out (first build takes several minutes)" >&2
  tmp="$out.tmp.$$"
  trap 'rm -f "$tmp"' EXIT
  GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" go build -p "${KUBE_TESTENV_BUILD_JOBS:-2}" -buildvcs=false -ldflags="-s -w" -o "$tmp" . >&2
  mv -f "$tmp" "$out"
fi
echo "$out"
