#!/bin/sh
# Builds the expression oracle: Terraform's evaluator (hashicorp/hcl v2.23.0
# hclsyntax + zclconf/go-cty v1.16.2, the versions current Terraform ships)
# reading one expression a line and printing its jsonencode text (or the
# error). Used to derive the expected values of conformance cases
# (port/numbers.py). Needs Go (Debian: golang-go) and checkouts:
#   HCL=path/to/hcl@v2.23.0 CTY=path/to/go-cty@v1.16.2 sh build.sh OUT
# plus golang-golang-x-text-dev, golang-github-apparentlymart-go-textseg-dev
# and golang-github-agext-levenshtein-dev (Debian) for their dependencies.
set -eu
out=${1:-./hcleval}
gp=$(mktemp -d)
mkdir -p "$gp/src/github.com/hashicorp/hcl" "$gp/src/github.com/zclconf" \
  "$gp/src/github.com/apparentlymart/go-textseg" "$gp/src/oracle"
cp -r "$HCL" "$gp/src/github.com/hashicorp/hcl/v2"
cp -r "$CTY" "$gp/src/github.com/zclconf/go-cty"
cp -r /usr/share/gocode/src/github.com/apparentlymart/go-textseg "$gp/src/github.com/apparentlymart/go-textseg/v15"
cp "$(dirname "$0")/main.go" "$gp/src/oracle/"
(cd "$gp/src/oracle" && GO111MODULE=off GOPATH="$gp:/usr/share/gocode" go build -o "$out" .)
