{{/*
The namespace: fixed in code (SYSTEM_NAMESPACE in src/operator/constants.ts), so the release
must be installed there. Every template includes this check.
*/}}
{{- define "classcache.namespace" -}}
{{- if ne .Release.Namespace "classcache-system" -}}
{{- fail (printf "classcache installs into the namespace classcache-system only, not %q: the operator, its admission policies and the webhook's configuration name classcache-system in code. Install with: helm install %s <chart> -n classcache-system --create-namespace" .Release.Namespace .Release.Name) -}}
{{- end -}}
{{- .Release.Namespace -}}
{{- end -}}

{{/* The chart's image: repository@digest when a digest is given, else repository:tag (default: appVersion). */}}
{{- define "classcache.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) -}}
{{- end -}}
{{- end -}}

{{/* What the operator passes on to agents, init steps and build kits (--image). */}}
{{- define "classcache.runtimeImage" -}}
{{- .Values.runtimeImage | default (include "classcache.image" .) -}}
{{- end -}}

{{/*
Labels of every object, and the selector of a component's pods. The NetworkPolicies the
operator creates in classcache-system select pods by these two labels (COMPONENTS, PART_OF in
src/operator/constants.ts): only `component: operator` reaches the directory, and the webhook
port is open on `component: webhook` alone.
*/}}
{{- define "classcache.labels" -}}
app.kubernetes.io/part-of: classcache
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{/* The operator's user name, as the API server sees its service account's requests. */}}
{{- define "classcache.operatorUser" -}}
system:serviceaccount:{{ include "classcache.namespace" . }}:classcache-operator
{{- end -}}

{{/* Pod scheduling of one Deployment (.Values.operator or .Values.webhook). */}}
{{- define "classcache.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}
