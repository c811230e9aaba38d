{{/*
One Deployment of the image: (dict "root" $ "component" "relay" "role" "relay"
"replicas" 2 "port" 9101 "opa" true "recreate" false "resources" {...}).
*/}}
{{- define "accord.deployment" -}}
{{- $root := .root -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "accord.fullname" $root }}-{{ .component }}
  labels:
    {{- include "accord.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  replicas: {{ .replicas }}
  revisionHistoryLimit: 3
  {{- if .recreate }}
  # One active writer: the old pod is gone before the new one starts.
  strategy: {type: Recreate}
  {{- else }}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  {{- end }}
  selector:
    matchLabels:
      {{- include "accord.selector" (dict "root" $root "component" .component) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "accord.labels" $root | nindent 8 }}
        app.kubernetes.io/component: {{ .component }}
      annotations:
        checksum/settings: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    spec:
      automountServiceAccountToken: false
      enableServiceLinks: false
      {{- if .terminationGrace }}
      terminationGracePeriodSeconds: {{ .terminationGrace }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      {{- with (include "accord.podScheduling" $root) }}
      {{- . | trim | nindent 6 }}
      {{- end }}
      {{- with .initContainers }}
      initContainers:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "accord.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: [{{ .role }}]
          {{- include "accord.env" $root | nindent 10 }}
          {{- with .env }}
          env:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          ports:
            - {name: {{ ternary "http" "metrics" (eq .component "api") }}, containerPort: {{ .port }}, protocol: TCP}
          readinessProbe:
            httpGet: {path: /readyz, port: {{ .port }}}
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 3
          livenessProbe:
            httpGet: {path: /healthz, port: {{ .port }}}
            initialDelaySeconds: 20
            periodSeconds: 20
            timeoutSeconds: 3
            failureThreshold: 3
          securityContext:
            {{- toYaml $root.Values.containerSecurityContext | nindent 12 }}
          resources:
            {{- toYaml .resources | nindent 12 }}
          volumeMounts:
            {{- include "accord.volumeMounts" . | nindent 12 }}
            {{- with .extraMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
        {{- if .opa }}
        {{- include "accord.opaSidecar" $root | nindent 8 }}
        {{- end }}
      volumes:
        {{- include "accord.volumes" (dict "root" $root "component" .component) | nindent 8 }}
        {{- with .extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
{{- end -}}

{{/* A Service for one component's port (the API's clients, the workers' /metrics). */}}
{{- define "accord.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "accord.fullname" .root }}-{{ .component }}
  labels:
    {{- include "accord.labels" .root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  type: {{ .type | default "ClusterIP" }}
  {{- if .headless }}
  clusterIP: None
  {{- end }}
  selector:
    {{- include "accord.selector" (dict "root" .root "component" .component) | nindent 4 }}
  ports:
    - {name: {{ .portName }}, port: {{ .port }}, targetPort: {{ .targetPort }}, protocol: TCP}
{{- end -}}

{{/* At most maxUnavailable pods of a component down by a voluntary disruption. */}}
{{- define "accord.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "accord.fullname" .root }}-{{ .component }}
  labels:
    {{- include "accord.labels" .root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  maxUnavailable: {{ .maxUnavailable }}
  selector:
    matchLabels:
      {{- include "accord.selector" (dict "root" .root "component" .component) | nindent 6 }}
{{- end -}}
