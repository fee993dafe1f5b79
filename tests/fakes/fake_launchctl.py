"""`launchctl` as the tests need it: bootstrap, bootout, print, kill,
kickstart, start, stop, list (see fakesvc.py for the shared machinery)."""

from __future__ import annotations

import os
import signal
import sys

import fakesvc

NOT_FOUND = 113  # launchctl's exit status for an unknown service


def _err(text: str, code: int) -> int:
    print(text, file=sys.stderr)
    return code


def _label_of(target: str) -> str:
    return target.rsplit("/", 1)[-1]


def _bootstrap(domain: str, path: str) -> int:
    try:
        plist = fakesvc.load_plist(path)
    except Exception as e:  # a broken plist is what the test wants to see
        return _err(f"Bootstrap failed: 5: Input/output error ({e})", 5)
    label = plist["Label"]
    if fakesvc.job(label) is not None:
        return _err("Bootstrap failed: 5: Input/output error", 5)
    with fakesvc.locked() as state:
        state["jobs"][label] = {
            "manager": "launchd",
            "path": path,
            "domain": domain,
            "argv": plist["ProgramArguments"],
            "env": plist.get("EnvironmentVariables", {}),
            "cwd": plist.get("WorkingDirectory", "/"),
            "stdout": plist.get("StandardOutPath", "/dev/null"),
            "stderr": plist.get("StandardErrorPath", "/dev/null"),
            "restart_on_failure": plist.get("KeepAlive") == {"SuccessfulExit": False},
            "pid": None,
            "running": False,
            "last_exit": None,
            "runs": 0,
        }
    if plist.get("RunAtLoad"):
        fakesvc.spawn_supervisor(label)
    return 0


def _bootout(args: list[str]) -> int:
    label = _label_of(args[0]) if len(args) == 1 else fakesvc.load_plist(args[1])["Label"]
    if fakesvc.job(label) is None:
        return _err("Boot-out failed: 3: No such process", 3)
    fakesvc.stop_job(label)
    with fakesvc.locked() as state:
        state["jobs"].pop(label, None)
    return 0


def _print(target: str) -> int:
    label = _label_of(target)
    j = fakesvc.job(label)
    if j is None:
        return _err(f'Could not find service "{label}" in domain for port', NOT_FOUND)
    lines = [
        f"{target} = {{",
        "\tactive count = 1",
        f"\tpath = {j['path']}",
        "\ttype = LaunchAgent",
        f"\tstate = {'running' if j['running'] else 'not running'}",
        "",
        f"\tprogram = {j['argv'][0]}",
        "\targuments = {",
    ]
    lines += [f"\t\t{a}" for a in j["argv"]] + ["\t}", ""]
    if j["running"]:
        lines.append(f"\tpid = {j['pid']}")
    lines.append(f"\truns = {j['runs']}")
    last = j["last_exit"]
    if last is not None and last < 0:
        name = signal.Signals(-last).name
        lines.append(f"\tlast terminating signal = {name}: {-last}")
    else:
        lines.append(f"\tlast exit code = {'(never exited)' if last is None else last}")
    print("\n".join(lines + ["}"]))
    return 0


def _kill(sig: str, target: str) -> int:
    j = fakesvc.job(_label_of(target))
    if j is None:
        return _err(f'Could not find service "{_label_of(target)}" in domain for port', NOT_FOUND)
    if not j["running"]:
        return _err("Failed to kill: 3: No such process", 3)
    os.kill(j["pid"], getattr(signal, "SIG" + sig) if not sig.isdigit() else int(sig))
    return 0


def _kickstart(args: list[str]) -> int:
    kill = "-k" in args
    label = _label_of([a for a in args if not a.startswith("-")][0])
    j = fakesvc.job(label)
    if j is None:
        return _err(f'Could not find service "{label}" in domain for port', NOT_FOUND)
    if j["running"] and not kill:
        return 0
    if j["running"]:
        fakesvc.stop_job(label, signal.SIGKILL)
    fakesvc.spawn_supervisor(label)
    return 0


def _list() -> int:
    print("PID\tStatus\tLabel")
    for label, j in fakesvc.read_state()["jobs"].items():
        pid = j["pid"] if j["running"] else "-"
        print(f"{pid}\t{j['last_exit'] or 0}\t{label}")
    return 0


def main(argv: list[str]) -> int:
    if not argv:
        return _err("usage: launchctl <subcommand> ...", 64)
    cmd, args = argv[0], argv[1:]
    if cmd == "bootstrap" and len(args) == 2:
        return _bootstrap(*args)
    if cmd == "bootout" and args:
        return _bootout(args)
    if cmd == "print" and len(args) == 1:
        return _print(args[0])
    if cmd == "kill" and len(args) == 2:
        return _kill(*args)
    if cmd == "kickstart" and args:
        return _kickstart(args)
    if cmd == "start" and len(args) == 1:  # the legacy form the seed's README uses
        return _kickstart([args[0]])
    if cmd == "stop" and len(args) == 1:
        j = fakesvc.job(args[0])
        if j is not None and j["running"]:
            os.kill(j["pid"], signal.SIGTERM)
        return 0
    if cmd == "list" and not args:
        return _list()
    return _err(f"fake launchctl: unsupported: {' '.join(argv)}", 64)
