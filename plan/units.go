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
