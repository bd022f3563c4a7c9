#!/usr/bin/env bash
# Scans the daemon's TLS configuration with sslscan (Debian package `sslscan`),
# presenting a dev client certificate, and fails on anything above "low":
# a protocol older than TLS 1.2, a cipher suite without forward secrecy or AEAD,
# compression, renegotiation, or session tickets.
#
#   scripts/tls-scan.sh [path/to/tokenvault]   (default: target/release/tokenvault)
set -euo pipefail
bin=${1:-${CARGO_TARGET_DIR:-target}/release/tokenvault}
command -v sslscan >/dev/null || { echo "install sslscan (apt-get install sslscan)"; exit 2; }
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
(cd "$work" && exec "$bin" serve --dev --listen 127.0.0.1:0 >out.log 2>err.log) &
pid=$!
for _ in $(seq 1 100); do grep -q "listening on" "$work/out.log" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/.*listening on https:\/\/\([^ ]*\).*/\1/p' "$work/out.log" | head -1)
[ -n "$addr" ] || { echo "daemon did not start"; cat "$work/err.log"; exit 1; }
sslscan --no-colour --show-sigs --certs="$work/keys/dev/checkout.pem" --pk="$work/keys/dev/checkout.key" "$addr" | tee "$work/scan.txt"
fail=0
grep -Eq 'SSLv2 +enabled|SSLv3 +enabled|TLSv1\.0 +enabled|TLSv1\.1 +enabled' "$work/scan.txt" && { echo "FAIL: a protocol older than TLS 1.2 is enabled"; fail=1; }
grep -E '^(Preferred|Accepted)' "$work/scan.txt" | grep -Evq 'GCM|CHACHA20' && { echo "FAIL: a non-AEAD cipher suite is accepted"; fail=1; }
grep -E '^(Preferred|Accepted)' "$work/scan.txt" | grep -E 'TLSv1\.2' | grep -Evq 'ECDHE' && { echo "FAIL: a TLS 1.2 suite without ECDHE is accepted"; fail=1; }
grep -q 'Compression enabled' "$work/scan.txt" && { echo "FAIL: TLS compression"; fail=1; }
grep -qi 'Insecure session renegotiation supported' "$work/scan.txt" && { echo "FAIL: insecure renegotiation"; fail=1; }
[ $fail -eq 0 ] && echo "tls-scan: nothing above low"
exit $fail
