#!/usr/bin/env python3
"""A standby exec provider over local directories: a stand-in for a
hypervisor API, showing every action of protocol 1
(schema/exec-provider.schema.json).

standby runs this once per action with one JSON request on stdin and reads
one JSON reply from stdout. Logs go to stderr. The "hypervisor" keeps all it
knows under --root (relative to the configuration directory):

    <root>/disks/<machine>/<disk>.img            failover disks
    <root>/vms/<run_id>/<machine>.json|.log      running "VMs" (processes)
    <root>/sandboxes/<run_id>/<machine>/...      test runs' disks, removed by destroy

A real provider would call its platform here instead: create a VM from the
restored disks, power it on, run a check through the guest agent, delete it.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time


def log(msg):
    print(f"provider.py: {msg}", file=sys.stderr)


class Refused(Exception):
    """An action that cannot be done; its message goes back as the error."""


def safe(name):
    """A machine address as a file name: machine.web["a"] -> machine.web-a."""
    name = name.replace("[", "-")
    name = re.sub(r'["\]]', "", name)
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return name if name and not name.startswith(".") else "_" + name


def machine_env(run, machine):
    """The environment every command of a machine gets."""
    env = dict(os.environ)
    env["STANDBY_MACHINE"] = machine["machine"]
    env["STANDBY_RUN_ID"] = run["run_id"]
    env["STANDBY_MODE"] = run["mode"]
    for name, path in machine["disks"].items():
        env["STANDBY_DISK_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()] = path
    return env


def start_time(pid):
    """Field 22 of /proc/<pid>/stat, so a reused pid is never mistaken for a VM."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


class Hypervisor:
    def __init__(self, root):
        self.root = os.path.abspath(root)

    def vms(self, run):
        return os.path.join(self.root, "vms", run["run_id"])

    def sandbox(self, run):
        return os.path.join(self.root, "sandboxes", run["run_id"])

    def prepare(self, req):
        run = req["run"]
        os.makedirs(self.sandbox(run) if run["mode"] == "test" else self.root, exist_ok=True)
        log(f"prepared {run['mode']} run {run['run_id']}")
        return {"ok": True}

    def disk_target(self, req):
        run, disk = req["run"], req["disk"]
        base = self.sandbox(run) if run["mode"] == "test" else os.path.join(self.root, "disks")
        name = re.sub(r"[^A-Za-z0-9._-]", "_", disk["name"])
        path = os.path.join(base, safe(req["machine"]), name + ".img")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.truncate(disk["size"])  # sparse; standby writes the restored bytes
        return {"ok": True, "path": path}

    def start(self, req):
        run, machine = req["run"], req["machine"]
        boot = machine["boot"]
        if not boot:
            return {"ok": True}
        vms = self.vms(run)
        os.makedirs(vms, exist_ok=True)
        name = safe(machine["machine"])
        with open(os.path.join(vms, name + ".log"), "wb") as out:
            try:
                proc = subprocess.Popen(
                    boot,
                    cwd=run["config_root"],
                    env=machine_env(run, machine),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own group, detached from us
                )
            except OSError as e:
                raise Refused(f"cannot run the boot command {boot[0]!r}: {e}")
        try:
            code = proc.wait(timeout=min(req["timeout_seconds"], 1.0))
        except subprocess.TimeoutExpired:
            record = {"pid": proc.pid, "start_time": start_time(proc.pid)}
            with open(os.path.join(vms, name + ".json"), "w") as f:
                json.dump(record, f)
            log(f"{machine['machine']} runs as pid {proc.pid}")
            return {"ok": True}
        if code != 0:
            with open(os.path.join(vms, name + ".log"), errors="replace") as f:
                tail = "".join(f.readlines()[-20:])
            raise Refused(f"the boot command exited {code}: {tail.strip()}")
        return {"ok": True}

    def stop_vm(self, record_path):
        with open(record_path) as f:
            vm = json.load(f)
        pid = vm["pid"]
        if start_time(pid) == vm["start_time"]:
            os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while start_time(pid) == vm["start_time"] and time.monotonic() < deadline:
                time.sleep(0.05)
            if start_time(pid) == vm["start_time"]:
                os.killpg(pid, signal.SIGKILL)
        os.remove(record_path)
        log(f"stopped pid {pid}")

    def stop(self, req):
        record = os.path.join(self.vms(req["run"]), safe(req["machine"]) + ".json")
        if os.path.exists(record):
            self.stop_vm(record)
        return {"ok": True}

    def check(self, req):
        run, machine, check = req["run"], req["machine"], req["check"]
        try:
            proc = subprocess.Popen(
                check["command"],
                cwd=run["config_root"],
                env=machine_env(run, machine),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as e:
            return {"ok": True, "passed": False, "detail": f"could not run {check['command'][0]!r}: {e}"}
        try:
            out, err = proc.communicate(timeout=check["timeout"])
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return {"ok": True, "passed": False, "detail": f"timed out after {check['timeout']}s"}
        out = out.decode(errors="replace")
        err = err.decode(errors="replace")
        passed = proc.returncode == 0
        detail = f"exit code {proc.returncode}"
        if passed and check["expect"] is not None and out.strip() != check["expect"].strip():
            passed = False
            detail += f", expected output {check['expect']!r}, got {out.strip()[:200]!r}"
        tail = "\n".join((out + err).strip().splitlines()[-20:])
        if tail:
            detail += "\n" + tail
        return {"ok": True, "passed": passed, "detail": detail}

    def destroy(self, req):
        run = req["run"]
        vms = self.vms(run)
        if os.path.isdir(vms):
            for entry in sorted(os.listdir(vms)):
                if entry.endswith(".json"):
                    self.stop_vm(os.path.join(vms, entry))
            shutil.rmtree(vms)
        if run["mode"] == "test":
            shutil.rmtree(self.sandbox(run), ignore_errors=True)
        for d in ("vms", "sandboxes"):
            try:
                os.rmdir(os.path.join(self.root, d))
            except OSError:
                pass  # not empty (another run) or not there
        log(f"destroyed {run['mode']} run {run['run_id']}")
        return {"ok": True}


ACTIONS = ("prepare", "disk_target", "start", "stop", "check", "destroy")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="where the stand-in hypervisor keeps disks and VMs")
    args = parser.parse_args()
    req = json.load(sys.stdin)
    if req.get("protocol") != 1:
        reply = {"ok": False, "error": f"protocol {req.get('protocol')!r} is not supported (this provider speaks 1)"}
    elif req.get("action") not in ACTIONS:
        reply = {"ok": False, "error": f"unknown action {req.get('action')!r}"}
    else:
        try:
            reply = getattr(Hypervisor(args.root), req["action"])(req)
        except Refused as e:
            reply = {"ok": False, "error": str(e)}
        except OSError as e:
            reply = {"ok": False, "error": f"{req['action']}: {e}"}
    json.dump(reply, sys.stdout)
    print()


if __name__ == "__main__":
    main()
