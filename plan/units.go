package plan

// RenewServiceUnit and RenewTimerUnit are the systemd units plan recommends
// with "tlsalpn issue", byte for byte the files in contrib/systemd/ and the
// units in README.md (tests compare them), so that what plan prints is what
// was tested. The service runs as root, as "sudo tlsalpn issue" did, so both
// use the same default storage, /var/lib/tlsalpn, with no $HOME needed.
const (
	RenewServiceUnit = `# tlsalpn renew under systemd, started twice a day by tlsalpn-renew.timer.
#
#   install -m 0755 tlsalpn /usr/local/bin/tlsalpn
#   install -m 0644 contrib/systemd/tlsalpn-renew.service contrib/systemd/tlsalpn-renew.timer /etc/systemd/system/
#   systemctl daemon-reload && systemctl enable --now tlsalpn-renew.timer
#
# It runs as root, like "sudo tlsalpn issue", so both use /var/lib/tlsalpn
# (no $HOME is needed). -q: nothing in the journal unless a certificate was
# renewed or deployed, or something failed; a failure makes the unit failed.
[Unit]
Description=Renew the certificates tlsalpn issued
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart=/usr/local/bin/tlsalpn renew -q
`
	RenewTimerUnit = `[Unit]
Description=Run tlsalpn renew twice a day

[Timer]
OnCalendar=*-*-* 03,15:17:00
RandomizedDelaySec=1h
Persistent=true

[Install]
WantedBy=timers.target
`
)

// ServeUnit is contrib/systemd/tlsalpn.service, the hardened unit for
// "tlsalpn serve" (Type=notify, an unprivileged user with only
// CAP_NET_BIND_SERVICE); SteerDropIn and HookKillDropIn are its opt-in
// drop-ins (contrib/systemd/tlsalpn.service.d/), and SysusersConf creates
// its user (contrib/sysusers.d/tlsalpn.conf). tlsalpn install-service
// writes them; tests keep them byte for byte equal to the files.
const (
	ServeUnit = `# tlsalpn serve under systemd: the front door on :443 in front of nginx (or
# HAProxy), as an unprivileged user with only CAP_NET_BIND_SERVICE.
#
#   install -m 0755 tlsalpn /usr/local/bin/tlsalpn
#   tlsalpn install-service serve        # this unit and the tlsalpn user (sysusers.d)
#   systemd-sysusers && tlsalpn serve --check-config /etc/tlsalpn/serve.yaml
#   systemctl daemon-reload && systemctl enable --now tlsalpn
#
# User=tlsalpn, a fixed system user (sysusers.d/tlsalpn.conf), not
# DynamicUser: the certificate outputs outside the state directory must stay
# owned by the same uid across restarts, which a dynamic uid does not
# promise. Give it the output directories: chown tlsalpn /etc/nginx/tls.
# Hooks run as that user with nothing more: HAProxy's runtime API (a socket
# the user may write) needs nothing; "nginx -s reload" or "kill -HUP" of a
# server running as root needs the drop-in deploy-hook-kill.conf.
# Steering (a BPF sk_lookup program and the backend's socket taken with
# pidfd_getfd) needs CAP_BPF, CAP_NET_ADMIN and CAP_SYS_PTRACE: the opt-in
# drop-in steer.conf; without it every connection is relayed and the log
# says why.
#
# Adjust ReadWritePaths to the "out" directories of your certificates. The
# leading "-" lets the unit start while one does not exist (systemd refuses
# to start a unit whose ReadWritePaths is missing). The storage,
# /var/lib/tlsalpn, is the StateDirectory below.

[Unit]
Description=tlsalpn front door on :443 (ACME TLS-ALPN-01 for the server behind it)
After=network-online.target nginx.service haproxy.service
Wants=network-online.target

[Service]
# READY=1 once the stored certificates are loaded and :443 is bound;
# RELOADING=1 and READY=1 around a SIGHUP; STOPPING=1 while draining.
Type=notify
NotifyAccess=main
ExecStartPre=/usr/local/bin/tlsalpn serve --check-config /etc/tlsalpn/serve.yaml
ExecStart=/usr/local/bin/tlsalpn serve --config /etc/tlsalpn/serve.yaml --storage /var/lib/tlsalpn --log-format json
# SIGHUP re-reads the config; a bad one is refused and the old one keeps running.
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=2s
# WATCHDOG=1 every 15s; a serve that stops pinging is restarted.
WatchdogSec=30s
# SIGTERM drains open connections for proxy.drain_timeout (30s by default).
TimeoutStopSec=45s
User=tlsalpn
Group=tlsalpn
AmbientCapabilities=CAP_NET_BIND_SERVICE
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
# AF_UNIX: the notify socket, HAProxy's runtime API; AF_NETLINK: Go's
# interface listing.
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK
SystemCallArchitectures=native
SystemCallFilter=@system-service
ReadWritePaths=-/etc/nginx/tls
StateDirectory=tlsalpn
StateDirectoryMode=0700
# No UMask=0027: servers running as another user must reach cert.pem
# through the 0755 directories deploy makes; key.pem is 0600 anyway.
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
`
	SteerDropIn = `# Opt-in: steering (tlsalpn serve hands connections straight to the
# backend's listening socket while no challenge is pending). It loads a BPF
# sk_lookup program (CAP_BPF, CAP_NET_ADMIN), and finds and takes the
# backend's socket from another user's process through /proc and
# pidfd_getfd (CAP_SYS_PTRACE). Install as
# /etc/systemd/system/tlsalpn.service.d/steer.conf (tlsalpn install-service
# serve --steer does), then systemctl daemon-reload && systemctl restart tlsalpn.
[Service]
AmbientCapabilities=CAP_BPF CAP_NET_ADMIN CAP_SYS_PTRACE
CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_SYS_PTRACE
SystemCallFilter=bpf pidfd_open pidfd_getfd
# Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
LimitMEMLOCK=infinity
`
	HookKillDropIn = `# Opt-in: deploy hooks that signal a server running as another user, such as
# "nginx -s reload" or "kill -HUP $(cat /run/nginx.pid)", need CAP_KILL; the
# hook inherits it (an ambient capability) and nothing else. Install as
# /etc/systemd/system/tlsalpn.service.d/deploy-hook-kill.conf (tlsalpn
# install-service serve --hook-kill does).
[Service]
AmbientCapabilities=CAP_KILL
CapabilityBoundingSet=CAP_KILL
`
	SysusersConf = `# The system user tlsalpn serve runs as (contrib/systemd/tlsalpn.service);
# systemd-sysusers creates it. Its home is the storage, its state directory.
u tlsalpn - "tlsalpn certificate daemon" /var/lib/tlsalpn
`
)
