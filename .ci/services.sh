#!/usr/bin/env bash
# The services the test suite talks to, on loopback only:
#   Azurite (Azure Blob emulator, npm) and moto_server (S3, PyPI).
#
#   .ci/services.sh start   install if needed, start both, create the container
#                           and bucket "standby-test", write .ci/.cache/services.env
#   .ci/services.sh stop    stop both (safe to call twice)
#   .ci/services.sh env     print the exports tests need (eval "$(.ci/services.sh env)")
set -euo pipefail

CI_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="$CI_DIR/.cache"
ENV_FILE="$CACHE/services.env"
AZURITE_VERSION=3.35.0 # 3.36+ need Node.js >= 21; the machine has 20
NODE_DIR="$CACHE/node"
VENV="$CACHE/venv"
DATA="$CACHE/azurite-data"
NAME=standby-test
# Azurite's well-known development account (public, documented by Microsoft).
AZ_ACCOUNT=devstoreaccount1
AZ_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

log() { echo "services: $*" >&2; }

show_logs() {
    for f in "$CACHE"/*.log; do
        [ -f "$f" ] || continue
        echo "----- $f (last 40 lines) -----" >&2
        tail -n 40 "$f" >&2
    done
}

fail() {
    log "FAILED: $*"
    show_logs
    stop_all
    exit 1
}

install_azurite() {
    local marker="$NODE_DIR/.installed-$AZURITE_VERSION"
    [ -f "$marker" ] && [ -x "$NODE_DIR/node_modules/.bin/azurite-blob" ] && return 0
    command -v npm >/dev/null || fail "npm is missing (apt-get install nodejs npm)"
    log "installing azurite@$AZURITE_VERSION into $NODE_DIR"
    mkdir -p "$NODE_DIR"
    npm install --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error \
        "azurite@$AZURITE_VERSION" >"$CACHE/install-npm.log" 2>&1 ||
        fail "npm install azurite@$AZURITE_VERSION"
    touch "$marker"
}

install_moto() {
    local sum marker
    sum="$(sha256sum "$CI_DIR/requirements.txt" | cut -c1-16)"
    marker="$VENV/.installed-$sum"
    [ -f "$marker" ] && [ -x "$VENV/bin/moto_server" ] && return 0
    log "installing moto, boto3, azure-storage-blob into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV" >"$CACHE/install-pip.log" 2>&1 || fail "python3 -m venv"
    "$VENV/bin/pip" install --disable-pip-version-check -q -r "$CI_DIR/requirements.txt" \
        >>"$CACHE/install-pip.log" 2>&1 || fail "pip install -r .ci/requirements.txt"
    touch "$marker"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Poll until URL answers any HTTP status, the process dies, or 90 s pass.
wait_http() {
    local what=$1 url=$2 pidfile=$3 deadline=$((SECONDS + 90))
    until curl -s -o /dev/null --max-time 2 "$url"; do
        alive "$pidfile" || fail "$what exited during start-up"
        [ $SECONDS -lt $deadline ] || fail "$what did not answer at $url within 90 s"
        sleep 0.2
    done
}

stop_one() {
    local what=$1 pidfile=$2 pid
    [ -f "$pidfile" ] || return 0
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        # Wait for it to exit (bounded), then insist.
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
        log "stopped $what (pid $pid)"
    fi
    rm -f "$pidfile"
}

stop_all() {
    stop_one azurite "$CACHE/azurite.pid"
    stop_one moto "$CACHE/moto.pid"
    rm -f "$ENV_FILE" # its ports are dead now
}

start_all() {
    mkdir -p "$CACHE"
    stop_all
    install_azurite
    install_moto

    local az_port s3_port
    az_port="$(free_port)"
    s3_port="$(free_port)"
    while [ "$s3_port" = "$az_port" ]; do s3_port="$(free_port)"; done

    rm -rf "$DATA"
    mkdir -p "$DATA"
    "$NODE_DIR/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$az_port" \
        --location "$DATA" --skipApiVersionCheck --silent \
        </dev/null >"$CACHE/azurite.log" 2>&1 &
    echo $! >"$CACHE/azurite.pid"
    "$VENV/bin/moto_server" -H 127.0.0.1 -p "$s3_port" \
        </dev/null >"$CACHE/moto.log" 2>&1 &
    echo $! >"$CACHE/moto.pid"

    wait_http azurite "http://127.0.0.1:$az_port/" "$CACHE/azurite.pid"
    wait_http moto "http://127.0.0.1:$s3_port/" "$CACHE/moto.pid"

    AZ_URL="http://127.0.0.1:$az_port/$AZ_ACCOUNT" S3_URL="http://127.0.0.1:$s3_port" \
        AZ_ACCOUNT="$AZ_ACCOUNT" AZ_KEY="$AZ_KEY" NAME="$NAME" \
        "$VENV/bin/python" - >"$CACHE/setup.log" 2>&1 <<'PY' || fail "creating container and bucket"
import os
import boto3
from azure.storage.blob import BlobServiceClient

name = os.environ["NAME"]
blob = BlobServiceClient(account_url=os.environ["AZ_URL"],
                         credential={"account_name": os.environ["AZ_ACCOUNT"],
                                     "account_key": os.environ["AZ_KEY"]})
blob.create_container(name)
s3 = boto3.client("s3", endpoint_url=os.environ["S3_URL"], region_name="us-east-1",
                  aws_access_key_id="standby-test", aws_secret_access_key="standby-test-secret")
s3.create_bucket(Bucket=name)
print("created container and bucket", name)
PY

    cat >"$ENV_FILE.tmp" <<ENV
# Written by .ci/services.sh start; source it to reach the test services.
unset AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3 AWS_SESSION_TOKEN AWS_PROFILE AZURE_STORAGE_SAS_TOKEN AZURE_STORAGE_SAS_KEY AZURE_STORAGE_ENDPOINT
export AZURE_STORAGE_USE_EMULATOR=true
export AZURE_STORAGE_ACCOUNT_NAME=$AZ_ACCOUNT
export AZURE_STORAGE_ACCOUNT_KEY='$AZ_KEY'
export AZURITE_BLOB_STORAGE_URL=http://127.0.0.1:$az_port
export AWS_ACCESS_KEY_ID=standby-test
export AWS_SECRET_ACCESS_KEY=standby-test-secret
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export AWS_ENDPOINT=http://127.0.0.1:$s3_port
export AWS_ALLOW_HTTP=true
export STANDBY_TEST_AZ_URL=az://$NAME
export STANDBY_TEST_S3_URL=s3://$NAME
ENV
    mv "$ENV_FILE.tmp" "$ENV_FILE"
    log "azurite on 127.0.0.1:$az_port, moto on 127.0.0.1:$s3_port; exports in $ENV_FILE"
}

case "${1:-}" in
start) start_all ;;
stop) stop_all ;;
env)
    [ -f "$ENV_FILE" ] || { log "not started: run .ci/services.sh start"; exit 1; }
    cat "$ENV_FILE"
    ;;
*)
    echo "usage: $0 start|stop|env" >&2
    exit 2
    ;;
esac
