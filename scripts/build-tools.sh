#!/usr/bin/env bash
# Builds the real Kubernetes control plane the tests run against (etcd, kube-apiserver,
# kube-controller-manager, kubectl; optionally helm) from the Go module proxy, at the versions
# pinned by tools/control-plane/*/go.mod and go.sum, into a per-version cache outside the
# repo, so a fresh clone and CI reuse binaries that are already there.
#
#   scripts/build-tools.sh                 # what the tests need: etcd kube-apiserver kube-controller-manager kubectl
#   scripts/build-tools.sh all             # also helm
#   scripts/build-tools.sh helm etcd       # just these
#
# Cache: ${ASTRID_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/astrid/tools}/<tool>-<version>/<tool>
# Needs only Go (see tools/control-plane/kubernetes/go.mod for the minimum version) and
# the module proxy; no Docker, no download sites.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mods="$root/tools/control-plane"
cache="${ASTRID_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/astrid/tools}"

# Static, reproducible, smaller binaries: no cgo (no C toolchain needed on the machine),
# no local paths baked in, no symbol tables. -mod=readonly makes a go.sum mismatch an error
# instead of a silent re-resolve, so what runs is what was pinned. -buildvcs=false: the
# Astrid checkout's commit means nothing inside a tool binary (and git may refuse to answer).
export CGO_ENABLED=0
export GOFLAGS="-trimpath -mod=readonly -buildvcs=false"

command -v go >/dev/null 2>&1 || { echo "build-tools: Go is not installed; install Go $(sed -n 's/^go //p' "$mods/kubernetes/go.mod") or newer" >&2; exit 1; }

# tool -> "<module dir> <package to build> <module whose version names the cache dir>"
spec() {
  case "$1" in
    etcd) echo "etcd go.etcd.io/etcd/server/v3 go.etcd.io/etcd/server/v3" ;;
    kube-apiserver) echo "kubernetes k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes" ;;
    kube-controller-manager) echo "kubernetes k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes" ;;
    kubectl) echo "kubernetes k8s.io/kubernetes/cmd/kubectl k8s.io/kubernetes" ;;
    helm) echo "helm helm.sh/helm/v3/cmd/helm helm.sh/helm/v3" ;;
    *) echo "build-tools: unknown tool '$1'; expected one of: etcd kube-apiserver kube-controller-manager kubectl helm all" >&2; exit 2 ;;
  esac
}

# The release scripts of Kubernetes and Helm stamp the version in at link time; a plain
# `go build` would report v0.0.0-master from /version, and clients that compare server
# versions (kubectl skew warnings, helm's kubeVersion checks) would misjudge it.
version_ldflags() {
  local tool=$1 dir=$2 version=$3
  case "$tool" in
    kube-* | kubectl)
      local minor
      minor=$(echo "$version" | cut -d. -f2)
      for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        printf -- '-X %s.gitVersion=%s -X %s.gitMajor=1 -X %s.gitMinor=%s -X %s.gitTreeState=clean ' \
          "$p" "$version" "$p" "$p" "$minor" "$p"
      done
      ;;
    helm)
      # Helm's Makefile derives the default Kubernetes version from its client-go (v0.N.x -> 1.N).
      local cg major minor
      cg=$(cd "$mods/$dir" && go list -m -f '{{.Version}}' k8s.io/client-go)
      major=$(($(echo "${cg#v}" | cut -d. -f1) + 1))
      minor=$(echo "$cg" | cut -d. -f2)
      printf -- '-X helm.sh/helm/v3/internal/version.version=%s -X helm.sh/helm/v3/internal/version.gitTreeState=clean ' "$version"
      for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
        printf -- '-X %s.k8sVersionMajor=%s -X %s.k8sVersionMinor=%s ' "$p" "$major" "$p" "$minor"
      done
      ;;
  esac
}

tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(etcd kube-apiserver kube-controller-manager kubectl)
[ "${tools[*]}" != "all" ] || tools=(etcd kube-apiserver kube-controller-manager kubectl helm)

total_start=$(date +%s)
for tool in "${tools[@]}"; do
  s=$(spec "$tool")
  read -r dir pkg versionmod <<<"$s"
  version=$(cd "$mods/$dir" && go list -m -f '{{.Version}}' "$versionmod")
  out="$cache/$tool-$version"
  if [ -x "$out/$tool" ]; then
    echo "build-tools: $tool $version is cached at $out/$tool"
    continue
  fi
  ldflags="-s -w $(version_ldflags "$tool" "$dir" "$version")"
  echo "build-tools: building $tool $version ($pkg) -> $out/$tool"
  mkdir -p "$out"
  start=$(date +%s)
  # Build to a temporary name and rename, so an interrupted build never leaves a partial
  # binary that the next run would take as cached. nice: the machine is shared with tests.
  (cd "$mods/$dir" && nice -n 10 go build -ldflags "$ldflags" -o "$out/$tool.partial" "$pkg")
  mv "$out/$tool.partial" "$out/$tool"
  took=$(($(date +%s) - start))
  size=$(du -h "$out/$tool" | cut -f1)
  echo "build-tools: built $tool $version in ${took}s ($size)"
done
echo "build-tools: done in $(($(date +%s) - total_start))s; cache $cache ($(du -sh "$cache" | cut -f1))"
