#!/usr/bin/env bash
# The cluster scenario of test/cluster-e2e.test.ts on a real kind cluster: the image built by
# the Dockerfile, the Helm chart, NATS in the cluster, real kubelets and a CNI.
#
# NOT RUN in this repository's CI: it needs a Docker engine and images from a container
# registry (kindest/node, node, nats), neither of which exists on the CI machines. The same
# scenario runs there without Docker (test/cluster-e2e.test.ts, `make cluster-demo`).
#
#   test/e2e-kind/run.sh            # creates cluster "astrid-e2e", runs, deletes it
#   KEEP=1 test/e2e-kind/run.sh     # keeps the cluster for a look afterwards
set -euo pipefail
cd "$(dirname "$0")/../.."
for tool in docker kind kubectl helm node npx; do
  command -v "$tool" >/dev/null 2>&1 || { echo "e2e-kind: $tool is required" >&2; exit 2; }
done
cluster=${KIND_CLUSTER:-astrid-e2e}
image=astrid/astrid:e2e
work=$(mktemp -d)

bash scripts/setup.sh
kind create cluster --name "$cluster" --wait 120s
cleanup() {
  rm -rf "$work"
  [ "${KEEP:-}" = "1" ] && echo "kept kind cluster $cluster" || kind delete cluster --name "$cluster"
}
trap cleanup EXIT
kubectl config use-context "kind-$cluster"

echo "==> image $image"
docker build -t "$image" .
kind load docker-image "$image" --name "$cluster"

echo "==> NATS with JetStream"
kubectl apply -f test/e2e-kind/nats.yaml
kubectl -n nats rollout status deployment/nats --timeout=120s

echo "==> Helm chart (the NATS subchart is not vendored; an existing NATS is used)"
cp -r charts/astrid "$work/astrid"
node --input-type=module -e '
  import { readFileSync, writeFileSync } from "node:fs";
  import { parse, stringify } from "yaml";
  const f = process.argv[1];
  const c = parse(readFileSync(f, "utf8"));
  delete c.dependencies;
  writeFileSync(f, stringify(c));
' "$work/astrid/Chart.yaml"
helm install astrid "$work/astrid" -n astrid-system --create-namespace --wait \
  --set image.repository=astrid/astrid --set image.tag=e2e --set image.pullPolicy=Never \
  --set nats.url=nats://nats.nats.svc:4222

echo "==> scenario"
# The yaml package is CommonJS: the ESM bundle needs a require of its own.
npx esbuild test/e2e-kind/fixtures-server.ts --bundle --platform=node --format=esm \
  --outfile="$work/server.mjs" --log-level=warning \
  "--banner:js=import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);"
npx tsx test/e2e-kind/drive.ts "$work/server.mjs"
