#!/usr/bin/env python3
"""Generate a fleet configuration (N machines, N protections, plain blocks)
and, optionally, a state document that matches all but a given share of it.

    gen_fleet.py DIR [--machines N] [--state-match PERCENT] [--lineage UUID]

Writes DIR/main.hcl, DIR/fleet.hcl and, with --state-match, DIR/.standby/state.json.

The state mirrors the attribute flattening in src/plan/attributes.rs (the map
`apply` records for each object). Keep the two in step: the test
tests/plan_generator.rs plans a small generated fleet against its 100%
state and expects "No changes".

Mismatches (for --state-match P below 100): the first 100-P machines of
each hundred differ; in even hundreds their data disk is recorded at another
path (an in-place update), in odd hundreds they and their protections are
missing from the state (creates).
"""
import argparse
import json
import os
import uuid

MAIN = """\
vault "main" {
  url      = "file://.standby/vault"
  key_file = "keys/vault.key"
}

site "onprem" {
  provider = "local"
  root     = "sites/onprem"
}

site "dr" {
  provider = "local"
  root     = "sites/dr"
}

policy "standard" {
  rpo_threshold          = "15m"
  crash_consistent_every = "5m"
  app_consistent_every   = "1h"
  retention              = "7d"
}
"""

MACHINE = """\
machine "m{i:05d}" {{
  site = site.onprem
  disk "system" {{ path = "m{i:05d}/system.img" }}
  disk "data"   {{ path = "m{i:05d}/data.img" }}
}}

protection "m{i:05d}" {{
  machine = machine.m{i:05d}
  target  = site.dr
  vault   = vault.main
  policy  = policy.standard

  consistency_group = "g{g:02d}"
}}

"""

TIME = "2026-11-01T00:00:00Z"


def obj(kind, attrs, status="ready"):
    return {"kind": kind, "attributes": attrs, "status": status, "updated_at": TIME}


def state(n, match, lineage):
    # attributes.rs: vault -> url, key_file; site -> provider, root;
    # policy -> durations as canonical strings, compression_level (default 1).
    objects = {
        "vault.main": obj("vault", {"url": "file://.standby/vault", "key_file": "keys/vault.key"}),
        "site.onprem": obj("site", {"provider": "local", "root": "sites/onprem"}),
        "site.dr": obj("site", {"provider": "local", "root": "sites/dr"}),
        "policy.standard": obj(
            "policy",
            {
                "rpo_threshold": "15m",
                "crash_consistent_every": "5m",
                "app_consistent_every": "1h",
                "retention": "7d",
                "compression_level": 1,
            },
        ),
    }
    off = 100 - match  # mismatches per 100 machines
    for i in range(n):
        name = f"m{i:05d}"
        changed = i % 100 < off
        if changed and (i // 100) % 2 == 1:
            continue  # missing from the state: created
        # recorded at another path: updated in place
        data = f"{name}/data-old.img" if changed else f"{name}/data.img"
        objects[f"machine.{name}"] = obj(
            "machine",
            {
                "site": "site.onprem",
                "disk.system.path": f"{name}/system.img",
                "disk.data.path": data,
            },
        )
        objects[f"protection.{name}"] = obj(
            "protection",
            {
                "machine": f"machine.{name}",
                "target": "site.dr",
                "vault": "vault.main",
                "policy": "policy.standard",
                "consistency_group": f"g{i % 50:02d}",
                "prevent_destroy": False,
            },
            status="protected",
        )
    return {
        "format_version": 1,
        "lineage": lineage,
        "serial": 1,
        "standby_version": "0.1.0",
        "objects": dict(sorted(objects.items())),
        "drills": [],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--machines", type=int, default=10_000)
    ap.add_argument("--state-match", type=int, metavar="PERCENT")
    ap.add_argument("--lineage", default=str(uuid.UUID(int=0x5EED)))
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    with open(os.path.join(a.dir, "main.hcl"), "w") as f:
        f.write(MAIN)
    with open(os.path.join(a.dir, "fleet.hcl"), "w") as f:
        f.write("".join(MACHINE.format(i=i, g=i % 50) for i in range(a.machines)))
    sp = os.path.join(a.dir, ".standby", "state.json")
    if a.state_match is not None:
        os.makedirs(os.path.dirname(sp), exist_ok=True)
        with open(sp, "w") as f:
            json.dump(state(a.machines, a.state_match, a.lineage), f, indent=1)
    elif os.path.exists(sp):
        os.remove(sp)


if __name__ == "__main__":
    main()
