{{/*
Expand the name of the chart.
*/}}
{{- define "filedrop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "filedrop.fullname" -}}
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

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "filedrop.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels plus the component: (dict "context" $ "component" "operator").
*/}}
{{- define "filedrop.labels" -}}
helm.sh/chart: {{ include "filedrop.chart" .context }}
{{ include "filedrop.selectorLabels" . }}
{{- if .context.Chart.AppVersion }}
app.kubernetes.io/version: {{ .context.Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .context.Release.Service }}
app.kubernetes.io/part-of: filedrop
{{- end }}

{{/*
Selector labels of one component: (dict "context" $ "component" "operator").
*/}}
{{- define "filedrop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "filedrop.name" .context }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Name of a component's resources: <fullname>-<component>.
*/}}
{{- define "filedrop.componentName" -}}
{{- printf "%s-%s" (include "filedrop.fullname" .context) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
ServiceAccount name of a component: (dict "context" $ "component" "operator" "serviceAccount" .Values.operator.serviceAccount).
*/}}
{{- define "filedrop.serviceAccountName" -}}
{{- if .serviceAccount.create }}
{{- default (include "filedrop.componentName" .) .serviceAccount.name }}
{{- else }}
{{- default "default" .serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "filedrop.operator.serviceAccountName" -}}
{{- include "filedrop.serviceAccountName" (dict "context" . "component" "operator" "serviceAccount" .Values.operator.serviceAccount) }}
{{- end }}

{{- define "filedrop.bridge.serviceAccountName" -}}
{{- include "filedrop.serviceAccountName" (dict "context" . "component" "bridge" "serviceAccount" .Values.bridge.serviceAccount) }}
{{- end }}

{{- define "filedrop.loader.serviceAccountName" -}}
{{- include "filedrop.serviceAccountName" (dict "context" . "component" "loader" "serviceAccount" .Values.loader.serviceAccount) }}
{{- end }}

{{- define "filedrop.spark.serviceAccountName" -}}
{{- include "filedrop.serviceAccountName" (dict "context" . "component" "spark" "serviceAccount" .Values.spark.serviceAccount) }}
{{- end }}

{{- define "filedrop.workflows.serviceAccountName" -}}
{{- include "filedrop.serviceAccountName" (dict "context" . "component" "workflows" "serviceAccount" .Values.argo.serviceAccount) }}
{{- end }}

{{- define "filedrop.docs.serviceAccountName" -}}
{{- include "filedrop.serviceAccountName" (dict "context" . "component" "docs" "serviceAccount" .Values.docs.server.serviceAccount) }}
{{- end }}

{{/*
The filedrop image: repository@digest, else repository:tag (default: the chart's appVersion).
*/}}
{{- define "filedrop.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The ConfigMap of non-secret settings every filedrop container reads.
*/}}
{{- define "filedrop.configMapName" -}}
{{- include "filedrop.componentName" (dict "context" . "component" "config") }}
{{- end }}

{{/*
envFrom of every filedrop container: the settings ConfigMap, and the optional AWS Secret.
*/}}
{{- define "filedrop.envFrom" -}}
- configMapRef:
    name: {{ include "filedrop.configMapName" . }}
{{- with .Values.aws.existingSecret }}
- secretRef:
    name: {{ . }}
{{- end }}
{{- end }}

{{- define "filedrop.workflows.envFrom" -}}
{{- include "filedrop.envFrom" . }}
{{- end }}

{{/*
The warehouse URL from its Secret, as a container env entry.
*/}}
{{- define "filedrop.warehouseEnv" -}}
- name: FILEDROP_WAREHOUSE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.warehouse.existingSecret }}
      key: {{ .Values.warehouse.urlKey }}
{{- end }}

{{/*
Name of the WorkflowTemplate (the CronWorkflow is <this>-daily).
*/}}
{{- define "filedrop.workflows.name" -}}
{{- include "filedrop.componentName" (dict "context" . "component" "transform") }}
{{- end }}

{{/*
The docs server's reload URL the workflow calls after publishing; empty without a docs server.
*/}}
{{- define "filedrop.docs.reloadUrl" -}}
{{- if .Values.docs.server.enabled }}
{{- printf "http://%s.%s.svc:%v/-/reload" (include "filedrop.componentName" (dict "context" . "component" "docs")) .Release.Namespace .Values.docs.server.service.port }}
{{- end }}
{{- end }}

{{/*
Egress every filedrop pod needs: DNS, then TCP to the given ports at networkPolicy.egressTo (or anywhere).
Call with (dict "context" $ "ports" (list 443 5432)).
*/}}
{{- define "filedrop.egressRules" -}}
- ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
- ports:
  {{- range .ports }}
    - {protocol: TCP, port: {{ . }}}
  {{- end }}
  {{- with .context.Values.networkPolicy.egressTo }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
