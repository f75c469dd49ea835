{{/*
Names. With release name "trousseau" (or one containing it) every object is
named "trousseau", as in deploy/daemonset/.
*/}}
{{- define "trousseau.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "trousseau.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "trousseau.agentConfigName" -}}
{{- printf "%s-vault-agent" (include "trousseau.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "trousseau.serviceAccountName" -}}
{{- default (include "trousseau.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The plain manifests' labels: the selector and every object's. */}}
{{- define "trousseau.labels" -}}
app.kubernetes.io/name: {{ include "trousseau.name" . }}
{{- end -}}

{{- define "trousseau.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (toString (default .Chart.AppVersion .Values.image.tag)) -}}
{{- end -}}
{{- end -}}

{{/* Fixed paths inside the pod. */}}
{{- define "trousseau.configDir" -}}/etc/trousseau{{- end -}}
{{- define "trousseau.tlsDir" -}}/var/run/secrets/trousseau/tls{{- end -}}
{{- define "trousseau.authDir" -}}/var/run/secrets/trousseau/auth{{- end -}}
{{- define "trousseau.runDir" -}}/var/run/trousseau{{- end -}}
{{- define "trousseau.defaultSAToken" -}}/var/run/secrets/kubernetes.io/serviceaccount/token{{- end -}}

{{/* vault.addr (a string, comma-separated or not, or a list) as a JSON list. */}}
{{- define "trousseau.addrs" -}}
{{- $raw := .Values.vault.addr -}}
{{- $items := list -}}
{{- if kindIs "slice" $raw -}}
{{- range $raw }}{{ $items = concat $items (splitList "," (toString .)) }}{{ end -}}
{{- else if $raw -}}
{{- $items = splitList "," (toString $raw) -}}
{{- end -}}
{{- $out := list -}}
{{- range $items -}}
{{- $a := trimSuffix "/" (trim .) -}}
{{- if and $a (not (has $a $out)) }}{{ $out = append $out $a }}{{ end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{- define "trousseau.socket" -}}
{{- printf "%s/kms.sock" (trimSuffix "/" .Values.socketDir) -}}
{{- end -}}

{{/* httpAddr split for the probes: host (0.0.0.0 and :: probed on loopback) and port. */}}
{{- define "trousseau.probeHost" -}}
{{- $host := regexReplaceAll ":[0-9]+$" (trim .Values.httpAddr) "" | trimPrefix "[" | trimSuffix "]" -}}
{{- if eq $host "0.0.0.0" -}}127.0.0.1
{{- else if eq $host "::" -}}::1
{{- else -}}{{ $host }}
{{- end -}}
{{- end -}}

{{- define "trousseau.probePort" -}}
{{- regexReplaceAll "^.*:" (trim .Values.httpAddr) "" -}}
{{- end -}}

{{/* Where vault-cacert points, or "" (bundled web PKI roots). */}}
{{- define "trousseau.caPath" -}}
{{- if trim (toString .Values.vault.caCert) -}}
{{- include "trousseau.configDir" . }}/vault-ca.pem
{{- else if or .Values.vault.caSecret.name .Values.vault.caConfigMap.name -}}
{{- include "trousseau.tlsDir" . }}/ca.crt
{{- end -}}
{{- end -}}

{{/* "true" when a projected service-account token is the login credential. */}}
{{- define "trousseau.projectedToken" -}}
{{- if or (eq .Values.auth.method "jwt") (and (eq .Values.auth.method "kubernetes") .Values.auth.serviceAccountToken.audience) -}}true{{- end -}}
{{- end -}}

{{/* The token file the kubernetes or jwt login reads. */}}
{{- define "trousseau.tokenPath" -}}
{{- if include "trousseau.projectedToken" . -}}
{{- include "trousseau.authDir" . }}/token
{{- else -}}
{{- include "trousseau.defaultSAToken" . -}}
{{- end -}}
{{- end -}}

{{/* Sources of the "tls" projected volume (CA from a Secret or ConfigMap, client certificate). */}}
{{- define "trousseau.tlsSources" -}}
{{- with .Values.vault.caSecret.name }}
- secret:
    name: {{ . }}
    items:
      - key: {{ $.Values.vault.caSecret.key }}
        path: ca.crt
{{- end }}
{{- with .Values.vault.caConfigMap.name }}
- configMap:
    name: {{ . }}
    items:
      - key: {{ $.Values.vault.caConfigMap.key }}
        path: ca.crt
{{- end }}
{{- with .Values.vault.clientCertSecret }}
- secret:
    name: {{ . }}
    items:
      - key: tls.crt
        path: client.crt
      - key: tls.key
        path: client.key
{{- end }}
{{- end -}}

{{/* Sources of the "auth" projected volume (login credentials), mounted only where the login happens. */}}
{{- define "trousseau.authSources" -}}
{{- if include "trousseau.projectedToken" . }}
- serviceAccountToken:
    audience: {{ .Values.auth.serviceAccountToken.audience }}
    expirationSeconds: {{ int .Values.auth.serviceAccountToken.expirationSeconds }}
    path: token
{{- end }}
{{- if eq .Values.auth.method "approle" }}
- secret:
    name: {{ .Values.auth.approle.secretName }}
    items:
      - key: role-id
        path: role-id
      - key: secret-id
        path: secret-id
{{- end }}
{{- end -}}

{{/*
The plugin's config.json: every key is a trousseau option (the flag's name
without dashes). Auth options are flags on the container instead, as in
deploy/daemonset/.
*/}}
{{- define "trousseau.configJson" -}}
{{- $addrs := include "trousseau.addrs" . | fromJsonArray -}}
{{- $kv := list -}}
{{- if eq (len $addrs) 1 -}}
{{- $kv = append $kv (list "vault-addr" (first $addrs)) -}}
{{- else -}}
{{- $kv = append $kv (list "vault-addr" $addrs) -}}
{{- end -}}
{{- with include "trousseau.caPath" . -}}
{{- $kv = append $kv (list "vault-cacert" .) -}}
{{- end -}}
{{- if .Values.vault.clientCertSecret -}}
{{- $kv = append $kv (list "vault-client-cert" (printf "%s/client.crt" (include "trousseau.tlsDir" .))) -}}
{{- $kv = append $kv (list "vault-client-key" (printf "%s/client.key" (include "trousseau.tlsDir" .))) -}}
{{- end -}}
{{- with .Values.vault.tlsServerName -}}
{{- $kv = append $kv (list "vault-tls-server-name" .) -}}
{{- end -}}
{{- with .Values.vault.namespace -}}
{{- $kv = append $kv (list "vault-namespace" .) -}}
{{- end -}}
{{- $kv = append $kv (list "transit-mount" (trimAll "/" .Values.transit.mount)) -}}
{{- $kv = append $kv (list "transit-key" .Values.transit.key) -}}
{{- with .Values.transit.decryptKeys -}}
{{- $kv = append $kv (list "decrypt-key" .) -}}
{{- end -}}
{{- $kv = append $kv (list "socket" (include "trousseau.socket" .)) -}}
{{- $kv = append $kv (list "http-addr" (trim .Values.httpAddr)) -}}
{{- with .Values.vault.timeout -}}
{{- $kv = append $kv (list "vault-timeout" (toString .)) -}}
{{- end -}}
{
{{- range $i, $p := $kv }}
  {{ index $p 0 | toJson }}: {{ index $p 1 | toJson }}{{ if lt (add1 $i) (len $kv) }},{{ end }}
{{- end }}
}
{{- end -}}

{{/* The agent's configuration (agent-sidecar mode). */}}
{{- define "trousseau.agentHcl" -}}
{{- $addrs := include "trousseau.addrs" . | fromJsonArray -}}
vault {
  address = {{ default (first $addrs) .Values.agent.vaultAddr | toJson }}
{{- with include "trousseau.caPath" . }}
  ca_cert = {{ toJson . }}
{{- end }}
{{- if .Values.vault.clientCertSecret }}
  client_cert = {{ printf "%s/client.crt" (include "trousseau.tlsDir" .) | toJson }}
  client_key  = {{ printf "%s/client.key" (include "trousseau.tlsDir" .) | toJson }}
{{- end }}
{{- with .Values.vault.tlsServerName }}
  tls_server_name = {{ toJson . }}
{{- end }}
}

auto_auth {
  method "kubernetes" {
    mount_path = {{ printf "auth/%s" (trimAll "/" (default "kubernetes" .Values.auth.mount)) | toJson }}
{{- with .Values.vault.namespace }}
    namespace  = {{ toJson . }}
{{- end }}
    config = {
      role       = {{ toJson .Values.auth.role }}
      token_path = {{ include "trousseau.tokenPath" . | toJson }}
    }
  }

  # The plugin's token: written atomically (temp file + rename), mode 0600,
  # on a memory-backed emptyDir shared only with the plugin.
  sink "file" {
    config = {
      path = {{ printf "%s/token" (include "trousseau.runDir" .) | toJson }}
      mode = 0600
    }
  }
}
{{- end -}}

{{/*
Everything the plugin would refuse at start (exit 2), refused at render
time instead, with what to change.
*/}}
{{- define "trousseau.validate" -}}
{{- $v := .Values -}}
{{- $name := "^[A-Za-z0-9._-]+$" -}}
{{- $mount := "^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$" -}}
{{- if not (has $v.mode (list "kubernetes-auth" "agent-sidecar")) -}}
{{- fail (printf "mode %q: use kubernetes-auth (the plugin logs in with auth.method) or agent-sidecar (a Vault Agent sidecar writes a token file)" (toString $v.mode)) -}}
{{- end -}}

{{- /* Vault addresses */ -}}
{{- $addrs := include "trousseau.addrs" . | fromJsonArray -}}
{{- if not $addrs -}}
{{- fail "vault.addr is required: the Vault/OpenBao address, e.g. https://vault.example.com:8200, or a list of every node of a cluster" -}}
{{- end -}}
{{- if gt (len $addrs) 16 -}}
{{- fail (printf "vault.addr lists %d addresses; trousseau takes at most 16" (len $addrs)) -}}
{{- end -}}
{{- range $addrs -}}
{{- if not (regexMatch "^https?://[A-Za-z0-9._:\\[\\]-]+$" .) -}}
{{- fail (printf "vault.addr %q: must be https://host[:port] (http:// for tests), with no path" .) -}}
{{- end -}}
{{- end -}}
{{- with $v.agent.vaultAddr -}}
{{- if not (regexMatch "^https?://[A-Za-z0-9._:\\[\\]-]+/?$" (toString .)) -}}
{{- fail (printf "agent.vaultAddr %q: must be https://host[:port], with no path" (toString .)) -}}
{{- end -}}
{{- end -}}

{{- /* Transit */ -}}
{{- if not $v.transit.key -}}
{{- fail "transit.key is required: the transit key that encrypts DEKs (deploy/vault/setup.sh creates kube)" -}}
{{- end -}}
{{- if not (regexMatch $name (toString $v.transit.key)) -}}
{{- fail (printf "transit.key %q is not a transit key name (letters, digits, - _ .)" (toString $v.transit.key)) -}}
{{- end -}}
{{- if not (regexMatch $mount (trimAll "/" (toString $v.transit.mount))) -}}
{{- fail (printf "transit.mount %q is not a mount path (letters, digits, - _ . and / between segments)" (toString $v.transit.mount)) -}}
{{- end -}}
{{- if not (kindIs "slice" $v.transit.decryptKeys) -}}
{{- if $v.transit.decryptKeys -}}
{{- fail "transit.decryptKeys must be a list, e.g. [kube-old]" -}}
{{- end -}}
{{- else -}}
{{- if gt (len $v.transit.decryptKeys) 16 -}}
{{- fail "transit.decryptKeys: at most 16 keys" -}}
{{- end -}}
{{- range $v.transit.decryptKeys -}}
{{- if not (regexMatch $name (toString .)) -}}
{{- fail (printf "transit.decryptKeys: %q is not a transit key name (letters, digits, - _ .)" (toString .)) -}}
{{- end -}}
{{- if eq (toString .) (toString $v.transit.key) -}}
{{- fail (printf "transit.decryptKeys: %q is transit.key itself; list only older keys" (toString .)) -}}
{{- end -}}
{{- end -}}
{{- if ne (len $v.transit.decryptKeys) (len (uniq $v.transit.decryptKeys)) -}}
{{- fail "transit.decryptKeys lists a key twice" -}}
{{- end -}}
{{- end -}}

{{- /* Authentication */ -}}
{{- $method := toString $v.auth.method -}}
{{- if eq $v.mode "agent-sidecar" -}}
{{- if ne $method "kubernetes" -}}
{{- fail (printf "mode agent-sidecar: the Vault Agent logs in with kubernetes auth; set auth.method to kubernetes (not %q), or use mode kubernetes-auth for %s" $method $method) -}}
{{- end -}}
{{- else -}}
{{- if eq $method "token" -}}
{{- fail "auth.method token: a token needs something to keep it fresh; use mode agent-sidecar (Vault Agent writes the token file), or kubernetes, jwt, approle or cert" -}}
{{- end -}}
{{- if not (has $method (list "kubernetes" "jwt" "approle" "cert")) -}}
{{- fail (printf "auth.method %q: use kubernetes, jwt, approle or cert (or mode agent-sidecar for a Vault Agent token)" $method) -}}
{{- end -}}
{{- end -}}
{{- if and (has $method (list "kubernetes" "jwt")) (not $v.auth.role) -}}
{{- fail (printf "auth.method %s needs auth.role (the Vault role to log in as)" $method) -}}
{{- end -}}
{{- if and $v.auth.role (not (regexMatch $name (toString $v.auth.role))) -}}
{{- fail (printf "auth.role %q is not a role name (letters, digits, - _ .)" (toString $v.auth.role)) -}}
{{- end -}}
{{- if and $v.auth.mount (not (regexMatch $mount (trimAll "/" (toString $v.auth.mount)))) -}}
{{- fail (printf "auth.mount %q is not a mount path (letters, digits, - _ . and / between segments), e.g. kubernetes-prod" (toString $v.auth.mount)) -}}
{{- end -}}
{{- if and (eq $method "jwt") (not $v.auth.serviceAccountToken.audience) -}}
{{- fail "auth.method jwt needs auth.serviceAccountToken.audience: the audience of the projected service-account token, one of the Vault jwt role's bound_audiences (e.g. vault)" -}}
{{- end -}}
{{- if include "trousseau.projectedToken" . -}}
{{- if lt (int $v.auth.serviceAccountToken.expirationSeconds) 600 -}}
{{- fail "auth.serviceAccountToken.expirationSeconds must be at least 600 (Kubernetes' minimum)" -}}
{{- end -}}
{{- end -}}
{{- if and (eq $method "approle") (not $v.auth.approle.secretName) -}}
{{- fail "auth.method approle needs auth.approle.secretName: an existing Secret with keys role-id and secret-id (kubectl create secret generic NAME --from-file=role-id --from-file=secret-id)" -}}
{{- end -}}
{{- if and (ne $method "approle") $v.auth.approle.secretName -}}
{{- fail (printf "auth.approle.secretName is set but auth.method is %s: set auth.method approle, or auth.approle.secretName \"\"" $method) -}}
{{- end -}}
{{- if and (eq $method "cert") (not $v.vault.clientCertSecret) -}}
{{- fail "auth.method cert needs vault.clientCertSecret: an existing kubernetes.io/tls Secret (tls.crt, tls.key) whose certificate a Vault cert role trusts" -}}
{{- end -}}

{{- /* TLS */ -}}
{{- $cas := 0 -}}
{{- if trim (toString $v.vault.caCert) }}{{ $cas = add1 $cas }}{{ end -}}
{{- if $v.vault.caSecret.name }}{{ $cas = add1 $cas }}{{ end -}}
{{- if $v.vault.caConfigMap.name }}{{ $cas = add1 $cas }}{{ end -}}
{{- if gt $cas 1 -}}
{{- fail "Vault's CA comes from one place only: set at most one of vault.caCert, vault.caSecret.name and vault.caConfigMap.name (vault.caCert has a placeholder default: set it to \"\" when using a Secret or ConfigMap)" -}}
{{- end -}}
{{- if and $v.vault.caSecret.name (not $v.vault.caSecret.key) -}}
{{- fail "vault.caSecret.key is empty: the key of the Secret that holds the CA's PEM (e.g. ca.crt)" -}}
{{- end -}}
{{- if and $v.vault.caConfigMap.name (not $v.vault.caConfigMap.key) -}}
{{- fail "vault.caConfigMap.key is empty: the key of the ConfigMap that holds the CA's PEM (e.g. ca.crt)" -}}
{{- end -}}
{{- with $v.vault.tlsServerName -}}
{{- if not (regexMatch "^([A-Za-z0-9-]{1,63}\\.)*[A-Za-z0-9-]{1,63}\\.?$" (toString .)) -}}
{{- fail (printf "vault.tlsServerName %q is not a DNS name" (toString .)) -}}
{{- end -}}
{{- end -}}
{{- with $v.vault.timeout -}}
{{- if not (regexMatch "^[0-9]+(\\.[0-9]+)?(ms|s|m)$" (toString .)) -}}
{{- fail (printf "vault.timeout %q: a duration with a unit, 100ms to 60s (e.g. 2s, 1500ms)" (toString .)) -}}
{{- end -}}
{{- end -}}

{{- /* Node side */ -}}
{{- $socket := include "trousseau.socket" . -}}
{{- if not (regexMatch "^/.*[^/]$" (toString $v.socketDir)) -}}
{{- fail (printf "socketDir %q must be an absolute directory path, e.g. /var/run/kmsplugin" (toString $v.socketDir)) -}}
{{- end -}}
{{- if gt (len $socket) 107 -}}
{{- fail (printf "socketDir is too long: the socket path %s is %d bytes, Unix sockets allow 107" $socket (len $socket)) -}}
{{- end -}}
{{- $http := trim (toString $v.httpAddr) -}}
{{- if not (or (regexMatch "^[0-9]{1,3}(\\.[0-9]{1,3}){3}:[0-9]{1,5}$" $http) (regexMatch "^\\[[0-9A-Fa-f:.]+\\]:[0-9]{1,5}$" $http)) -}}
{{- fail (printf "httpAddr %q: IP:PORT such as 127.0.0.1:8787 or [::1]:8787 (required: the probes use it)" $http) -}}
{{- end -}}
{{- $port := include "trousseau.probePort" . | int -}}
{{- if or (lt $port 1) (gt $port 65535) -}}
{{- fail (printf "httpAddr %q: the port must be 1 to 65535" $http) -}}
{{- end -}}
{{- if and (not $v.serviceAccount.create) (not $v.serviceAccount.name) -}}
{{- fail "serviceAccount.create is false: set serviceAccount.name to the existing ServiceAccount the Vault role is bound to" -}}
{{- end -}}
{{- end -}}
