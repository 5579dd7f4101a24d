#!/usr/bin/env bash
# Builds helm (helm.sh/helm/v3 cmd/helm, pinned by go.mod here) from the Go module proxy
# unless that binary already exists.
# Usage: tools/helm/build.sh [OUTPUT]
#   OUTPUT defaults to <repo>/target/helm/helm-<key>, where <key> is the first 16 hex
#   digits of the sha256 of go.mod, go.sum and this script, so a new pin or new flags give
#   a new path. The -X flags are those of helm's own Makefile (version, default Kubernetes
#   version of `helm template` and `helm lint`), so it behaves like a released helm.
# The last line on stdout is the binary's absolute path; build output goes to stderr.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ $# -ge 1 ]; then
  mkdir -p "$(dirname "$1")"
  out="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
fi
cd "$here"
if [ -z "${out:-}" ]; then
  key="$(cat go.mod go.sum build.sh | sha256sum | cut -c1-16)"
  mkdir -p ../../target/helm
  out="$(cd ../../target/helm && pwd)/helm-$key"
fi
if [ ! -x "$out" ]; then
  echo "building $out (a cold build takes a few minutes)" >&2
  tmp="$out.tmp.$$"
  trap 'rm -f "$tmp"' EXIT
  version="$(awk '$1 == "helm.sh/helm/v3" { print $2 }' go.mod)"
  k8s_minor=37 # helm v3.22 is built against k8s.io/client-go v0.37
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags="$ldflags -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
  done
  GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" \
    go build -p "${HELM_BUILD_JOBS:-2}" -buildvcs=false -ldflags="$ldflags" -o "$tmp" helm.sh/helm/v3/cmd/helm >&2
  mv -f "$tmp" "$out"
fi
echo "$out"
