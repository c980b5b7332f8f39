#!/bin/sh
# Test certificates for docker-compose.yml's TLS proxy: a CA, the server certificate, and one
# client certificate per charge point id given (security profile 3: CN = the charge point id).
#   deploy/make-certs.sh [server-hostname] [cid ...]    e.g. deploy/make-certs.sh gw.example.com CP001
# Writes deploy/certs/. Use certificates from your own CA in production.
set -eu
cd "$(dirname "$0")"
host="${1:-localhost}"
[ $# -gt 0 ] && shift
mkdir -p certs && cd certs
[ -f ca.key ] || openssl req -x509 -newkey rsa:3072 -nodes -days 3650 -subj "/CN=ocppgw test CA" \
  -keyout ca.key -out ca.crt
openssl req -newkey rsa:2048 -nodes -subj "/CN=$host" -keyout server.key -out server.csr
printf "subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\n" "$host" > server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
  -extfile server.ext -out server.crt
for cid in "$@"; do
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$cid" -keyout "$cid.key" -out "$cid.csr"
  openssl x509 -req -in "$cid.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 -out "$cid.crt"
done
rm -f ./*.csr ./*.ext
echo "certificates in $(pwd)"
