#!/usr/bin/env python3
"""Write conformance cases for numbers with Terraform's exact values.

Usage: numbers.py ORACLE OUT.json [PRELUDE.hcl] < expressions (one per line, `# name`
lines name the next expression). ORACLE is the program port/oracle/build.sh
builds (Terraform's hclsyntax + go-cty). Each case gets `want` (the value)
and `json` (the exact jsonencode text, so digits past a 64-bit float are
checked), or `error` (a part of Terraform's message that standby's
message must contain (Terraform's own is kept as `terraform`), given after ` !! ` on the expression line).
"""
import json
import subprocess
import sys



def past_float(v):
    """Whether a JSON value holds a number past a 64-bit float's range."""
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, float)):
        return abs(v) > 1.7e308
    if isinstance(v, list):
        return any(past_float(x) for x in v)
    if isinstance(v, dict):
        return any(past_float(x) for x in v.values())
    return False


oracle, out = sys.argv[1], sys.argv[2]
# Blocks every case needs (variables the oracle defines alike).
prelude = open(sys.argv[3]).read() if len(sys.argv) > 3 else None
cases, name, pending = [], None, []
for line in sys.stdin:
    line = line.rstrip("\n")
    if not line.strip():
        continue
    if line.startswith("# "):
        name = line[2:]
        continue
    expr, _, err = line.partition(" !! ")
    pending.append((name or expr, expr, err))
    name = None
res = subprocess.run([oracle], input="\n".join(e for _, e, _ in pending) + "\n",
                     capture_output=True, text=True, check=True).stdout.splitlines()
for (name, expr, err), got in zip(pending, res):
    text = got.split("\t", 1)[1]
    if err:
        if not text.startswith("ERROR"):
            sys.exit(f"{expr}: Terraform gives {text}, not an error")
        cases.append({"name": name, "expr": expr, "error": err, "terraform": text[6:]})
        if prelude:
            cases[-1]["hcl"] = prelude
        continue
    if text.startswith(("ERROR", "PARSE-ERROR", "JSON-ERROR")):
        sys.exit(f"{expr}: {text}")
    case = {"name": name, "expr": expr, "want": json.loads(text), "json": text}
    if past_float(case["want"]):
        del case["want"]  # serde_json cannot read it; the text is compared
    if prelude:
        case["hcl"] = prelude
    cases.append(case)
json.dump({"source": f"values from Terraform's own evaluator (hcl v2.23.0, go-cty v1.16.2) via port/oracle, written by port/numbers.py from {sys.argv[0].rsplit('/', 1)[0]}/{out.rsplit('/', 1)[-1].split('-', 1)[1].replace('.json', '.txt')}",
           "cases": cases}, open(out, "w"), indent=1, ensure_ascii=False)
open(out, "a").write("\n")
