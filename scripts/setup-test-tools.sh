#!/usr/bin/env bash
# What only the tests need, on top of scripts/setup.sh: promtool and the Kubernetes control plane.
set -euo pipefail
cd "$(dirname "$0")/.."

# promtool (Debian's prometheus package) checks the chart's alert rules.
if ! command -v promtool >/dev/null 2>&1; then
  echo "== apt-get install prometheus (for promtool)"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get install -y --no-install-recommends prometheus \
    || { $sudo_cmd apt-get update && $sudo_cmd apt-get install -y --no-install-recommends prometheus; }
  # The package starts a prometheus service; the tests start their own when they need one.
  $sudo_cmd systemctl stop prometheus >/dev/null 2>&1 || pkill -x prometheus || true
fi

# etcd, kube-apiserver, kube-controller-manager and kubectl for the control-plane and kubelet
# harness tests, and helm for the chart tests (helm lint/template, the alert rules the cluster
# end-to-end test evaluates), built from the Go module proxy at pinned versions into
# ~/.cache/astrid/tools (about 15 minutes on a fresh machine, skipped once cached).
bash scripts/build-tools.sh all

