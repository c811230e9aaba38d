{{/* The release's name prefix, cut to what Kubernetes names allow. */}}
{{- define "accord.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "accord.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: accord
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The selector of one component: call with (dict "root" $ "component" "relay"). */}}
{{- define "accord.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "accord.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}
{{- end -}}

{{/* The Secret a component reads: its existingSecret, or the one the chart makes. */}}
{{- define "accord.secretName" -}}
{{- $s := index .root.Values.secrets .component -}}
{{- if $s.existingSecret -}}
{{- $s.existingSecret -}}
{{- else -}}
{{- printf "%s-%s" (include "accord.fullname" .root) .component -}}
{{- end -}}
{{- end -}}

{{- define "accord.caConfigMap" -}}
{{- if .Values.kafka.caConfigMap -}}
{{- .Values.kafka.caConfigMap -}}
{{- else -}}
{{- printf "%s-kafka-ca" (include "accord.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* envFrom + env shared by every Accord container: the settings ConfigMap, the files. */}}
{{- define "accord.env" -}}
envFrom:
  - configMapRef:
      name: {{ include "accord.fullname" . }}-settings
{{- end -}}

{{/* Volumes of every Accord pod: its Secret, the Kafka CA, the writable emptyDirs. */}}
{{- define "accord.volumes" -}}
- name: secrets
  secret:
    secretName: {{ include "accord.secretName" (dict "root" .root "component" .component) }}
    defaultMode: 0440
- name: kafka-ca
  configMap:
    name: {{ include "accord.caConfigMap" .root }}
- name: state
  emptyDir: {sizeLimit: 64Mi}
- name: tmp
  emptyDir: {sizeLimit: 64Mi}
{{- end -}}

{{- define "accord.volumeMounts" -}}
- {name: secrets, mountPath: /run/secrets/accord, readOnly: true}
- {name: kafka-ca, mountPath: /etc/accord/kafka, readOnly: true}
- {name: state, mountPath: /var/lib/accord}
- {name: tmp, mountPath: /tmp}
{{- end -}}

{{/* The OPA sidecar, on loopback only. */}}
{{- define "accord.opaSidecar" -}}
- name: opa
  image: {{ include "accord.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- if eq .Values.opa.policySource "bundle" }}
  command:
    - /usr/local/bin/opa
    - run
    - --server
    - --addr=127.0.0.1:{{ .Values.opa.port }}
    - --log-format=json
    - --log-level=error
    - --set=services.bundles.url={{ required "opa.bundleUrl is required with policySource bundle" .Values.opa.bundleUrl }}
    - --set=bundles.accord.service=bundles
    - --set=bundles.accord.resource=accord.tar.gz
    - --set=bundles.accord.polling.min_delay_seconds={{ .Values.opa.bundlePollSeconds }}
    - --set=bundles.accord.polling.max_delay_seconds={{ mul 2 .Values.opa.bundlePollSeconds }}
  {{- else }}
  args: [opa]
  env:
    - {name: ACCORD_OPA_ADDR, value: "127.0.0.1:{{ .Values.opa.port }}"}
  {{- end }}
  securityContext:
    {{- toYaml .Values.containerSecurityContext | nindent 4 }}
  resources:
    {{- toYaml .Values.opa.resources | nindent 4 }}
  volumeMounts:
    - {name: state, mountPath: /var/lib/accord}
    - {name: tmp, mountPath: /tmp}
{{- end -}}

{{- define "accord.podScheduling" -}}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
