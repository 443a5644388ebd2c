#!/usr/bin/env bash
# helm lint and helm template of deploy/helm/tickrun, in both store variants (SQLite on a PVC,
# PostgreSQL from a Secret) and with S3 credentials, Kafka brokers and a registry set. No
# cluster needed; tests/integration/test_helm_chart.py validates the rendered objects against a
# real API server.
#   deploy/helm/check.sh            (make helm-check)
# helm: $HELM, else the one `deploy/peers/ensure.sh k8s` built, else helm on PATH.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
chart="$here/tickrun"
k8s_version="$(sed -n 's/^KUBERNETES_VERSION=//p' "$here/../peers/versions.env")"
built="${TICKRUN_CACHE:-$HOME/.cache/tickrun}/peers/k8s-$k8s_version/bin/helm"
helm="${HELM:-}"
if [ -z "$helm" ]; then
    if [ -x "$built" ]; then helm="$built"; else helm="$(command -v helm || true)"; fi
fi
[ -n "$helm" ] || { echo "no helm: run deploy/peers/ensure.sh k8s (or set HELM)" >&2; exit 1; }

variants=(
    "sqlite:"
    "postgres:--set store.postgres.url=postgresql+psycopg://tickrun:pw@db:5432/tickrun"
    "external:--set store.postgres.existingSecret=db --set token.existingSecret=tok \
--set artifacts.path=s3://art --set artifacts.s3.endpoint=http://minio:9000 \
--set artifacts.s3.existingSecret=s3 --set kafka.brokers={kafka-0:9092,kafka-1:9092} \
--set registry.url=registry.example:5000/tickrun --set registry.existingSecret=reg \
--set registry.tlsVerify=false --set rbac.keda=true"
    "s3-values:--set artifacts.path=s3://art --set artifacts.s3.accessKey=a \
--set artifacts.s3.secretKey=b --set image.digest=sha256:$(printf '0%.0s' {1..64})"
)
for v in "${variants[@]}"; do
    name="${v%%:*}"
    # shellcheck disable=SC2206  # the flags are meant to split
    flags=(${v#*:})
    "$helm" lint --strict "$chart" "${flags[@]}" >/dev/null
    "$helm" template tickrun "$chart" --namespace tickrun --kube-version "${k8s_version#v}" \
        "${flags[@]}" >/dev/null
    echo "ok: $name (helm lint --strict, helm template)"
done
