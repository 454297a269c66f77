// Package config reads the file that configures "tlsalpn serve": the front
// door on :443 that answers acme-tls/1 itself, routes every other
// connection by SNI to the servers already running, and keeps the listed
// certificates renewed and deployed.
//
// The file is YAML. Unknown keys are errors, and every error names the
// file, line and column and says what to write instead:
//
//	serve.yaml:4:3: unknown key "lisen" in the top level: did you mean "listen"?
//	serve.yaml:12:17: routes[0].send_proxy: want 0, 1 or 2, got "yes"
//
// The whole format, with the defaults:
//
//	listen: ":443"                    # host:port of the front door (default ":443")
//	storage: /var/lib/tlsalpn         # accounts and certificates (default: the command's)
//	                                  # or, for a cluster, a mapping (etcd_* and encryption_key_file not beside a directory):
//	# storage:
//	#   location: etcd://10.0.0.1:2379,10.0.0.2:2379/tlsalpn   # etcd members and the key prefix
//	#   encryption_key_file: /etc/tlsalpn/storage.key          # 32 bytes, the same on every node: keys are stored only encrypted
//	#   etcd_ca: /etc/tlsalpn/etcd-ca.pem                      # TLS to etcd: its CA (optional)
//	#   etcd_cert: /etc/tlsalpn/etcd-client.pem                # a client certificate and key: both or neither
//	#   etcd_key: /etc/tlsalpn/etcd-client-key.pem
//	#   etcd_user: tlsalpn                                     # etcd authentication: both or neither
//	#   etcd_password_file: /etc/tlsalpn/etcd-password
//
//	acme:
//	  ca: letsencrypt                 # a CA name or a directory URL (default letsencrypt)
//	  email: ops@example.com          # for the CA's expiry and policy mail (optional)
//	  agree_tos: true                 # required once certificates are listed: read the CA's terms first
//	  ca_root: /etc/tlsalpn/root.pem  # roots for the CA's own HTTPS (private or test CAs)
//	  eab: {kid: "...", hmac_key: "..."}   # external account binding: both or neither
//	  key_type: ec256                 # ec256 (default), ec384, rsa2048, rsa3072 or rsa4096
//	  profile: ""                     # certificate profile the CA offers (optional)
//	  preferred_chain: ""             # issuer common name of the chain to prefer (optional)
//
//	proxy:                            # all optional; 0 means the default
//	  client_hello_timeout: 10s       # wait for the ClientHello (default 10s)
//	  idle_timeout: 10m               # close connections silent this long (default 10m)
//	  dial_timeout: 5s                # connect to a backend (default 5s)
//	  max_connections: 8000           # concurrent clients (default 8000)
//	  max_hello_waits_per_source: 128 # connections one address (IPv6: /64) may hold before its ClientHello (default 128)
//	  drain_timeout: 30s              # grace for open connections on SIGTERM (default 30s)
//	  trusted_proxies: [10.0.0.0/8, 192.0.2.7]   # may send a PROXY header (CIDRs or addresses)
//	  steer: auto                     # auto (default) or off: see below
//
//	routes:                           # where connections go, by SNI
//	  - names: [example.com, "*.example.com"]   # exact, one-label wildcard, or "*" (default route)
//	    backend: 127.0.0.1:8443       # host:port (required)
//	    mode: passthrough             # passthrough (default) | http | tcp
//	    send_proxy: 2                 # PROXY protocol to the backend: 0 (default), 1 or 2
//
//	admin: 127.0.0.1:9443             # admin API: /metrics, /healthz, /readyz, /status, POST /renew (default: none)
//	admin_token_file: /etc/tlsalpn/admin-token   # bearer token required by the admin API; needed off loopback
//
//	certificates:                     # obtained at start, renewed in the background
//	  - names: [example.com, www.example.com]   # no wildcards: those need DNS-01
//	    out: /etc/nginx/tls/example.com         # deploy the PEM files here (optional)
//	    deploy_hook: systemctl reload nginx     # run after each deployment (optional)
//	    hook_timeout: 2m                        # (default 2m)
//	    haproxy:                                # hot update over the runtime API (optional)
//	      socket: /run/haproxy/admin.sock       # unix path, or host:port of a TCP stats socket
//	      cert: /etc/haproxy/certs/example.com.pem   # the crt path HAProxy loaded
//	    key_type: ec384                         # overrides acme's (optional)
//	    profile: shortlived                     # overrides acme's (optional)
//
// Durations are Go durations ("30s", "10m", "1h30m") or start with whole
// days ("7d", "1d12h"). A list of one may be written as a plain value
// (names: example.com). Anchors and aliases work, so a route and a
// certificate can share one list of names; top-level keys that start with
// "x-" are ignored, so they can hold anchors and nothing else.
//
// Rules checked beyond the types:
//   - a name is in one route only, and only one route is the default "*";
//   - a route in mode http or tcp terminates TLS, so each of its names must
//     be on some certificate (and so cannot be a wildcard or "*");
//   - certificate names need no route: the front door answers the CA for
//     every name itself;
//   - certificates need acme.agree_tos: true.
//
// Steering (proxy.steer: auto, Linux): when the only route is one
// passthrough "*" route to a backend listening on this host, with no PROXY
// protocol either way, the front door steps out of the data path while no
// challenge is pending: the kernel hands each new connection straight to
// the backend's own listening socket, so it costs nothing and the backend
// sees the client's real address. Just before a challenge is published,
// new connections reach the front door again until the last one is
// withdrawn. Where it cannot be done (not root, an old kernel, a backend
// on another host) the front door relays as with steer: off, and says why.
//
// example-nginx.yaml and example-haproxy.yaml in this directory are
// complete, commented configurations for the two usual setups.
package config
