#!/usr/bin/env bash
# Builds the binaries of kube-testenv --node unless they already exist, into one directory:
#   kube-node  kubelet, kube-proxy and kube-scheduler in one binary, from the same
#              k8s.io/kubernetes module graph as kube-testenv (node/main.go)
#   pause      the pods' sandbox process, static (pause/main.go)
# Usage: tools/kube-testenv/build-node.sh [OUTPUT-DIR]
#   OUTPUT-DIR defaults to <repo>/target/kube-testenv/node-<key>, <key> being the first 16
#   hex digits of the sha256 of go.mod, go.sum, node/*.go, pause/*.go and this script.
# The last line on stdout is the directory's absolute path (kube-testenv --node-bin-dir);
# build output goes to stderr.
# A cold build takes long (~18 min on 2 busy cores; less when kube-testenv was built first,
# since most packages are shared through the Go build cache).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ $# -ge 1 ]; then
  mkdir -p "$(dirname "$1")"
  out="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
fi
cd "$here"
if [ -z "${out:-}" ]; then
  key="$(cat go.mod go.sum node/*.go pause/*.go build-node.sh | sha256sum | cut -c1-16)"
  mkdir -p ../../target/kube-testenv
  out="$(cd ../../target/kube-testenv && pwd)/node-$key"
fi
if [ ! -x "$out/kube-node" ] || [ ! -x "$out/pause" ]; then
  echo "building $out (a cold build takes a long time)" >&2
  tmp="$out.tmp.$$"
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp"
  k8s="$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' go.mod)"
  minor="$(echo "$k8s" | cut -d. -f2)"
  v=k8s.io/component-base/version
  ldflags="-s -w -X $v.gitVersion=$k8s -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean"
  GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" CGO_ENABLED=0 \
    go build -p "${KUBE_TESTENV_BUILD_JOBS:-2}" -buildvcs=false -ldflags="-s -w" -o "$tmp/pause" ./pause >&2
  GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" \
    go build -p "${KUBE_TESTENV_BUILD_JOBS:-2}" -buildvcs=false -ldflags="$ldflags" -o "$tmp/kube-node" ./node >&2
  rm -rf "$out"
  mv -f "$tmp" "$out"
fi
echo "$out"
