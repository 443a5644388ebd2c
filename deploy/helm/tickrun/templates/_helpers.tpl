{{/* Names and labels shared by every object of the release. */}}

{{- define "tickrun.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-tickrun, or the release name when it already says tickrun. */}}
{{- define "tickrun.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tickrun.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tickrun.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "tickrun.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "tickrun.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tickrun
{{- end }}

{{- define "tickrun.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tickrun.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tickrun.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The store is PostgreSQL when a URL or a Secret holding one is given; else SQLite on a PVC. */}}
{{- define "tickrun.postgres" -}}
{{- if or .Values.store.postgres.url .Values.store.postgres.existingSecret }}true{{ end }}
{{- end }}

{{- define "tickrun.tokenSecret" -}}
{{- default (printf "%s-token" (include "tickrun.fullname" .)) .Values.token.existingSecret }}
{{- end }}

{{- define "tickrun.dbSecret" -}}
{{- default (printf "%s-db" (include "tickrun.fullname" .)) .Values.store.postgres.existingSecret }}
{{- end }}

{{- define "tickrun.s3Secret" -}}
{{- default (printf "%s-s3" (include "tickrun.fullname" .)) .Values.artifacts.s3.existingSecret }}
{{- end }}

{{/* S3 credentials come from a Secret when one is named or when the values give them. */}}
{{- define "tickrun.s3Credentials" -}}
{{- $s3 := .Values.artifacts.s3 }}
{{- if or $s3.existingSecret $s3.accessKey $s3.secretKey }}true{{ end }}
{{- end }}

{{- define "tickrun.pvcName" -}}
{{- default (printf "%s-state" (include "tickrun.fullname" .)) .Values.store.sqlite.existingClaim }}
{{- end }}

{{/* The key of each Secret: the chart's own name for it, or the one given for an existingSecret. */}}
{{- define "tickrun.tokenKey" -}}
{{- if .Values.token.existingSecret }}{{ .Values.token.existingSecretKey }}{{ else }}token{{ end }}
{{- end }}

{{- define "tickrun.dbKey" -}}
{{- if .Values.store.postgres.existingSecret }}{{ .Values.store.postgres.existingSecretKey }}{{ else }}url{{ end }}
{{- end }}
