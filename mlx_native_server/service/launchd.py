"""launchd (macOS): the login service as a LaunchAgent in the gui/<uid> domain.

Loaded with `launchctl bootstrap`, removed with `bootout`; a stop is
`launchctl kill TERM`, after which the server exits 0 and KeepAlive
{SuccessfulExit: false} leaves it stopped. The seed's `launchctl start|stop
com.local.mlx-native-server` and `launchctl list | grep mlx-native-server`
work on the same job.
"""

from __future__ import annotations

import os
import plistlib
import re

from ..core import proc
from ..core.errors import UserError
from ..core.paths import SERVICE_LABEL, Paths
from .render import ServiceSpec, recorded_args_from_plist, render_plist
from .state import ServiceState, StateBase, wait_until, write_file

UNLOAD_TIMEOUT = 60.0  # seconds bootout may take (launchd's ExitTimeOut plus slack)


def print_fields(text: str) -> dict[str, str]:
    """The top-level `key = value` lines of `launchctl print` (one tab deep)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("\t") and not line.startswith("\t\t") and " = " in line:
            key, value = line.strip().split(" = ", 1)
            fields.setdefault(key, value.strip())
    return fields


def last_exit(fields: dict[str, str]) -> int | None:
    """`last exit code = N`, or `last terminating signal = Killed: 9` as -9."""
    signal_text = fields.get("last terminating signal", "")
    m = re.search(r"(\d+)\s*$", signal_text)
    if m:
        return -int(m.group(1))
    code = fields.get("last exit code", "")
    return int(code) if re.fullmatch(r"-?\d+", code) else None


class Launchd:
    manager = "launchd"

    def __init__(self, paths: Paths, uid: int | None = None):
        self.paths = paths
        self.name = SERVICE_LABEL
        self.file = paths.launchd_plist
        self.domain = f"gui/{os.getuid() if uid is None else uid}"
        self.target = f"{self.domain}/{self.name}"

    def render(self, spec: ServiceSpec) -> bytes:
        return render_plist(self.paths.plist_template.read_bytes(), spec)

    def recorded_args(self) -> list[str]:
        try:
            return recorded_args_from_plist(self.file.read_bytes())
        except (OSError, ValueError, plistlib.InvalidFileException):
            return []

    def state(self) -> ServiceState:
        installed = self.file.exists()
        r = proc.run(["launchctl", "print", self.target], check=False)
        base = StateBase(manager=self.manager, name=self.name, file=self.file, installed=installed)
        if r.returncode == 127:
            return ServiceState(
                **base,
                loaded=None,
                running=False,
                pid=None,
                last_exit=None,
                detail="launchctl was not found (launchd is macOS only)",
            )
        if not r.ok:
            return ServiceState(
                **base, loaded=False, running=False, pid=None, last_exit=None, state="not loaded"
            )
        fields = print_fields(r.stdout)
        pid = int(fields["pid"]) if fields.get("pid", "").isdigit() else None
        state = fields.get("state", "")
        return ServiceState(
            **base,
            loaded=True,
            running=state == "running" and pid is not None,
            pid=pid,
            last_exit=last_exit(fields),
            state=state,
        )

    def _bootstrap(self) -> None:
        proc.run(
            ["launchctl", "bootstrap", self.domain, str(self.file)],
            what=f"launchctl bootstrap {self.domain} {self.file}",
            hint=(
                f"the {self.domain} domain exists only for a user logged in at the "
                f"desktop; check the file with 'plutil -lint {self.file}'"
            ),
        )

    def _bootout(self) -> None:
        proc.run(["launchctl", "bootout", self.target], check=False)
        if not wait_until(lambda: not self.state().loaded, UNLOAD_TIMEOUT):
            raise UserError(
                f"launchd still has {self.target} loaded after "
                f"'launchctl bootout {self.target}'; run that again, then retry."
            )

    def install(self, content: bytes, private: bool) -> list[str]:
        """Replace any loaded copy with `content` and load it; says what it did."""
        done = []
        old = self.state()
        if old.loaded:
            self._bootout()
            done.append(f"unloaded the previous copy ({self.target})")
        write_file(self.file, content, private)
        done.append(f"wrote {self.file}")
        self._bootstrap()
        done.append(
            f"loaded it with 'launchctl bootstrap {self.domain}': it starts now "
            "and at every login, and restarts after a crash but not after a stop"
        )
        return done

    def uninstall(self) -> list[str]:
        done = []
        st = self.state()
        if st.loaded:
            self._bootout()
            pid = f", pid {st.pid}" if st.running else ""
            done.append(f"stopped and unloaded {self.target} (launchctl bootout{pid})")
        if self.file.exists():
            self.file.unlink()
            done.append(f"removed {self.file}")
        return done

    def start(self) -> None:
        st = self.state()
        if not st.loaded:
            self._bootstrap()
        elif not st.running:
            proc.run(
                ["launchctl", "kickstart", self.target], what=f"launchctl kickstart {self.target}"
            )

    def stop(self, timeout: float) -> str | None:
        """Stop the job so it stays stopped; None if it was not running."""
        st = self.state()
        if not st.loaded:
            return None
        if not st.running:
            if st.last_exit in (None, 0):
                return None
            # Crashed and waiting out ThrottleInterval: unload so it stays down.
            self._bootout()
            return (
                f"unloaded {self.target}, which was waiting to restart after a crash "
                f"({st.last_exit_text}); ./start-server.sh --service loads it again"
            )
        proc.run(
            ["launchctl", "kill", "TERM", self.target], what=f"launchctl kill TERM {self.target}"
        )
        if wait_until(lambda: not self.state().running, timeout):
            return (
                f"stopped the login service {self.name} (pid {st.pid}) with 'launchctl kill "
                "TERM'; it stays stopped until ./start-server.sh --service or your next login"
            )
        self._bootout()
        return (
            f"the login service {self.name} (pid {st.pid}) did not stop within {timeout:g}s; "
            f"unloaded it with 'launchctl bootout' (./start-server.sh --service loads it again)"
        )
