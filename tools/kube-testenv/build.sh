#!/usr/bin/env bash
# Builds kube-testenv (embedded etcd + kube-apiserver + kube-controller-manager in one
# process) unless that binary already exists.
# Usage: tools/kube-testenv/build.sh [OUTPUT]
#   OUTPUT defaults to <repo>/target/kube-testenv/kube-testenv-<key>, where <key> is the
#   first 16 hex digits of the sha256 of go.mod, go.sum and the Go sources, so any change
#   to them gives a new path and a rebuild. A relative OUTPUT is taken from the caller's
#   working directory.
# The last line on stdout is the binary's absolute path; build output goes to stderr.
# A cold build takes several minutes (~9 min on 2 busy cores) and ~600 MB of modules.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ $# -ge 1 ]; then
  mkdir -p "$(dirname "$1")"
  out="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
fi
cd "$here"
if [ -z "${out:-}" ]; then
  key="$(cat go.mod go.sum ./*.go build.sh | sha256sum | cut -c1-16)"
  mkdir -p ../../target/kube-testenv
  out="$(cd ../../target/kube-testenv && pwd)/kube-testenv-$key"
fi
if [ ! -x "$out" ]; then
  echo "building $out (a cold build takes several minutes)" >&2
  tmp="$out.tmp.$$"
  trap 'rm -f "$tmp"' EXIT
  # The version the API server reports (helm checks charts' kubeVersion against it).
  k8s="$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' go.mod)"
  minor="$(echo "$k8s" | cut -d. -f2)"
  v=k8s.io/component-base/version
  ldflags="-s -w -X $v.gitVersion=$k8s -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean"
  GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" \
    go build -p "${KUBE_TESTENV_BUILD_JOBS:-2}" -buildvcs=false -ldflags="$ldflags" -o "$tmp" . >&2
  mv -f "$tmp" "$out"
fi
echo "$out"
