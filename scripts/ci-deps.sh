#!/usr/bin/env bash
# Installs, from Debian's (or Ubuntu's) packages, the servers the tests run
# for real: nginx and HAProxy (internal/backend starts them as plain child
# processes on loopback ports), and promtool (package prometheus). Safe to run again: what is installed already
# is left alone, and with nothing missing it touches nothing, not even the
# package lists.
#
# The packages' services are NOT started: Debian's maintainer scripts start
# a service on installation, which would take ports 80 and 443 on a CI
# machine. A policy-rc.d answering 101 ("action not allowed"), the hook
# invoke-rc.d and deb-systemd-invoke consult, stops them for the duration of
# the install; an existing policy-rc.d is put back afterwards.
#
# Usage: scripts/ci-deps.sh [--dry-run]
#   --dry-run  print the commands instead of running them.
# CI_DEPS_ASSUME_MISSING="nginx haproxy" treats those as missing, to see the
# install path (with --dry-run) on a machine that has them.
set -euo pipefail

dry_run=0
case "${1:-}" in
"") ;;
--dry-run | -n) dry_run=1 ;;
-h | --help)
	sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
	exit 0
	;;
*)
	echo "ci-deps: unknown argument $1 (try --help)" >&2
	exit 2
	;;
esac

run() {
	if [ "$dry_run" = 1 ]; then
		echo "+ $*"
	else
		"$@"
	fi
}

# have NAME: the command is installed (sbin is often missing from a
# non-root PATH), and not listed in CI_DEPS_ASSUME_MISSING.
have() {
	case " ${CI_DEPS_ASSUME_MISSING:-} " in *" $1 "*) return 1 ;; esac
	command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/local/sbin/$1" ]
}

# Commands the tests need, and the package that provides each. "nginx" is
# the smallest choice everywhere: on Debian 12 it is the server itself
# (nginx-light only adds a module on top), on older releases and Ubuntu a
# metapackage for a full build.
missing=()
have nginx || missing+=(nginx)
have haproxy || missing+=(haproxy)
# import (tlsalpn import certbot|lego): directories made by the real tools
# against Pebble.
have certbot || missing+=(certbot)
have lego || missing+=(lego)
# systemd-analyze verifies the units in contrib/systemd and those tlsalpn
# install-service writes (the daemon itself is not run).
have systemd-analyze || missing+=(systemd)
# promtool (in Debian's prometheus package; its server is not started)
# checks a real /metrics scrape and contrib/prometheus/alerts.yml.
have promtool || missing+=(prometheus)
# curl runs the README's admin API commands as written.
have curl || missing+=(curl)
# The keep-your-ACME-client tests (cmd/tlsalpn keepclient_test.go) run
# Debian's lego, dehydrated and uacme (its ualpn client and ualpn.sh hook)
# against Pebble through tlsalpn serve:
have dehydrated || missing+=(dehydrated)
have ualpn || missing+=(uacme)
# The benchmarks (bench/proxy.sh) also want wrk and strace (and ualpn, above):
# CI_DEPS_BENCH=1 adds them.
if [ -n "${CI_DEPS_BENCH:-}" ]; then
	have wrk || missing+=(wrk)
	have strace || missing+=(strace)
fi

if [ ${#missing[@]} -eq 0 ]; then
	echo "ci-deps: nothing to install: everything needed is present"
	exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
	echo "ci-deps: missing ${missing[*]}, and this is not a Debian-like system (no apt-get): install them by hand" >&2
	exit 1
fi

sudo=()
if [ "$(id -u)" != 0 ]; then
	if ! command -v sudo >/dev/null 2>&1; then
		echo "ci-deps: missing ${missing[*]}: run as root, or install sudo" >&2
		exit 1
	fi
	sudo=(sudo -n) # never prompt: CI has no terminal
fi

export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d
saved=""
if [ -e "$policy" ]; then
	saved=$policy.ci-deps-saved
	run "${sudo[@]}" mv -f "$policy" "$saved"
fi
restore_policy() {
	if [ -n "$saved" ]; then
		run "${sudo[@]}" mv -f "$saved" "$policy"
	else
		run "${sudo[@]}" rm -f "$policy"
	fi
}
trap restore_policy EXIT
if [ "$dry_run" = 1 ]; then
	echo "+ write $policy: exit 101 (services are not started)"
else
	printf '#!/bin/sh\n# ci-deps.sh: no service starts during the install\nexit 101\n' |
		"${sudo[@]}" tee "$policy" >/dev/null
	"${sudo[@]}" chmod 755 "$policy"
fi

apt_opts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
echo "ci-deps: installing ${missing[*]}"
run "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q -o DPkg::Lock::Timeout=300 </dev/null
run "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install "${apt_opts[@]}" "${missing[@]}" </dev/null

if [ "$dry_run" = 0 ]; then
	for pkg in "${missing[@]}"; do
		echo "ci-deps: installed $(dpkg-query -W -f='${Package} ${Version}' "$pkg")"
	done
	for cmd in "${missing[@]}"; do
		case "$cmd" in etcd-server) cmd=etcd ;; prometheus) cmd=promtool ;; esac
		CI_DEPS_ASSUME_MISSING="" have "$cmd" || {
			echo "ci-deps: $cmd is still missing after installing its package" >&2
			exit 1
		}
	done
fi
