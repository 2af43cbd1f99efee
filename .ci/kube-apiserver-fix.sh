#!/bin/bash
# Builds a kube-apiserver v1.20.2 that survives custom resources, for the local
# Kubernetes of shared/tools/k8s (whose prebuilt kube-apiserver crashes).
#
# Why: the prebuilt binaries are Kubernetes 1.20.2 built with Debian's Go 1.19,
# from the upstream tree's vendor/, which holds github.com/modern-go/reflect2
# v1.0.1. That version calls the runtime's map iterator with its pre-Go-1.18
# signature (reflect2 issue #24, fixed in v1.0.2), so the apiserver dies with
# "unexpected fault address 0x0 / fatal error: fault" (SIGSEGV in
# reflect2.UnsafeIterate <- json-iterator) the first time it encodes a map
# with json-iterator: on every create of a custom resource object
# (apiextensions' schema coercer marshals its metadata). Chaos Mesh
# experiments are custom resources, so the cluster is useless for them.
#
# The fix: the same Debian source, vendor/github.com/modern-go/reflect2
# replaced by Debian's golang-github-modern-go-reflect2-dev (1.0.2), only
# cmd/kube-apiserver rebuilt, the way local-k8s.sh builds it. Everything comes
# from Debian's archive through apt. About 10-20 minutes on 2 cores, once per
# machine: the result is kept as $OUT and reused.
#
#   OUT=/var/tmp/aiopslab-ci-tools/kube-apiserver-1.20.2-reflect2-1.0.2 .ci/kube-apiserver-fix.sh
#
# Environment: OUT (the binary to produce), BUILD (scratch, default /var/tmp/aiopslab-k8s-fix).
set -euo pipefail
OUT=${OUT:-/var/tmp/aiopslab-ci-tools/kube-apiserver-1.20.2-reflect2-1.0.2}
BUILD=${BUILD:-/var/tmp/aiopslab-k8s-fix}
SRC_VER=1.20.5+really1.20.2
KVER=v1.20.2
log() { echo "kube-apiserver-fix: $*" >&2; }

if [ -x "$OUT" ]; then
  log "already built: $OUT"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq golang-go golang-github-modern-go-reflect2-dev make rsync >/dev/null
REFLECT2=/usr/share/gocode/src/github.com/modern-go/reflect2
[ -f "$REFLECT2/go_above_118.go" ] || { log "$REFLECT2 is not reflect2 >= 1.0.2"; exit 1; }

mkdir -p "$BUILD/src"
cd "$BUILD/src"
if [ ! -f "kubernetes_${SRC_VER}.orig.tar.gz" ]; then
  # Debian's source package, through apt with a temporary deb-src twin of the
  # existing sources (as local-k8s.sh build does); removed right after.
  list=/etc/apt/sources.list.d/aiopslab-k8s-fix-src.sources
  sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > "$list"
  trap 'rm -f "$list"' EXIT
  apt-get update -qq
  apt-get source --download-only -qq kubernetes
  rm -f "$list"
  trap - EXIT
  apt-get update -qq
fi
[ -d kubernetes-1.20.2 ] || { log "unpacking the source"; tar xzf "kubernetes_${SRC_VER}.orig.tar.gz"; }

tree=$BUILD/src/kubernetes-1.20.2
vendored=$tree/vendor/github.com/modern-go/reflect2
if [ ! -f "$vendored/go_above_118.go" ]; then
  log "replacing vendored reflect2 with Debian's $(dpkg-query -W -f '${Version}' golang-github-modern-go-reflect2-dev)"
  rm -rf "$vendored"
  mkdir -p "$vendored"
  rsync -a --exclude '*_test.go' --exclude 'test*' "$REFLECT2/" "$vendored/"
  sed -i 's|^# github.com/modern-go/reflect2 v1.0.1$|# github.com/modern-go/reflect2 v1.0.2|' "$tree/vendor/modules.txt"
fi

export GOCACHE=$BUILD/gocache HOME=$BUILD/home GOTOOLCHAIN=local CGO_ENABLED=0
mkdir -p "$HOME" "$BUILD/gopath/src/k8s.io"
ln -sfn "$tree" "$BUILD/gopath/src/k8s.io/kubernetes"
cd "$BUILD/gopath/src/k8s.io/kubernetes"
if [ ! -f pkg/generated/openapi/zz_generated.openapi.go ]; then
  log "generating files (make generated_files)"
  make generated_files >/dev/null
fi
export GOPATH=$BUILD/gopath GO111MODULE=off
v=k8s.io/kubernetes/vendor/k8s.io
ld="-s -w -X $v/component-base/version.gitVersion=$KVER -X $v/component-base/version.gitMajor=1"
ld="$ld -X $v/component-base/version.gitMinor=20 -X $v/client-go/pkg/version.gitVersion=$KVER"
log "building kube-apiserver"
go build -trimpath -ldflags "$ld" -o "$BUILD/kube-apiserver" ./cmd/kube-apiserver
mkdir -p "$(dirname "$OUT")"
install -m 755 "$BUILD/kube-apiserver" "$OUT"
log "built $OUT"
