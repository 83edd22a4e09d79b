#!/usr/bin/env python3
"""Recreate the state.json of the golden plan cases, as `apply` would have
recorded them: plan a configuration against no state with the real binary,
turn every created object into a state entry, then apply the case's edits.

    testdata/plans/make_states.py PATH/TO/standby

Run it only when the attribute flattening changes on purpose; then bless the
goldens (STANDBY_BLESS=1 cargo test --test plan_golden -- --ignored).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TIME = "2026-11-01T00:00:00Z"


def state_from(binary, config_dir, args=(), serial=1):
    with tempfile.TemporaryDirectory() as tmp:
        for f in os.listdir(config_dir):
            shutil.copy(os.path.join(config_dir, f), tmp)
        out = subprocess.run(
            [binary, "-C", tmp, "plan", "--json", *args],
            check=True, capture_output=True, text=True,
        ).stdout
    plan = json.loads(out)
    objects = {}
    for c in plan["changes"]:
        assert c["action"] == "create", c
        objects[c["address"]] = {
            "kind": c["kind"],
            "attributes": {a["name"]: a["after"] for a in c["attributes"]},
            "status": "protected" if c["kind"] == "protection" else "ready",
            "updated_at": TIME,
        }
    return {
        "format_version": 1,
        "lineage": plan["lineage"],
        "serial": serial,
        "standby_version": "0.1.0",
        "objects": objects,
        "drills": [],
    }


def write(case, state):
    state["objects"] = dict(sorted(state["objects"].items()))
    with open(os.path.join(HERE, case, "state.json"), "w") as f:
        json.dump(state, f, indent=2)
        f.write("\n")


def main():
    binary = sys.argv[1]
    quick = os.path.join(HERE, "quickstart_create", "config")

    # no_changes: exactly what the quickstart config asks for.
    write("no_changes", state_from(binary, quick, serial=4))

    # changes_with_notes: the quickstart as applied, plus machine.old and its
    # protection (with recorded points), listed in recovery_plan.shop, and a
    # failed drill long ago.
    s = state_from(binary, quick, serial=12)
    o = s["objects"]
    o["machine.old"] = {
        "kind": "machine",
        "attributes": {"site": "site.onprem", "disk.system.path": "old/system.img"},
        "status": "ready",
        "updated_at": TIME,
    }
    o["protection.old"] = {
        "kind": "protection",
        "attributes": {
            "machine": "machine.old",
            "target": "site.dr",
            "vault": "vault.main",
            "policy": "policy.standard",
            "prevent_destroy": False,
            "observed.recovery_points": 42,
            "observed.stored_bytes": 3221225472,
        },
        "status": "protected",
        "updated_at": TIME,
    }
    o["recovery_plan.shop"]["attributes"]["group.data.machines"] = ["machine.db", "machine.old"]
    s["drills"].append({
        "plan": "recovery_plan.shop",
        "started_at": "2026-09-01T01:00:00Z",
        "finished_at": "2026-09-01T01:09:00Z",
        "passed": False,
        "rto_seconds": None,
        "rpo_seconds": 300,
    })
    write("changes_with_notes", s)

    # drift: the quickstart as applied, with disk sizes recorded for
    # machine.db; the golden run has no disks, so both read as missing.
    s = state_from(binary, quick, serial=5)
    db = s["objects"]["machine.db"]["attributes"]
    db["observed.disk.data.size"] = 65536
    db["observed.disk.system.size"] = 16777216
    write("drift", s)

    # sensitive_variable: applied with the old token.
    write("sensitive_variable", state_from(
        binary, os.path.join(HERE, "sensitive_variable", "config"),
        args=["--var", "dr_token=0ld-s3cret-t0ken"], serial=2))


if __name__ == "__main__":
    main()
