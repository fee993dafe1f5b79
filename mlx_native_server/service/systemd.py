"""systemd (Linux): the login service as a user unit.

`systemctl --user enable --now` starts it at login (and at boot once
lingering is on); Restart=on-failure brings it back after a crash but not
after `systemctl --user stop`, which waits for the server to exit 0.
"""

from __future__ import annotations

import getpass
import shlex

from ..core import proc
from ..core.errors import UserError
from ..core.paths import SERVICE_UNIT, Paths
from .render import ServiceSpec, recorded_args_from_unit, render_unit
from .state import ServiceState, StateBase, write_file

SHOW = "LoadState,ActiveState,SubState,MainPID,ExecMainCode,ExecMainStatus"
_NO_BUS = ("Failed to connect to", "No medium found", "$DBUS_SESSION_BUS_ADDRESS")


def show_fields(text: str) -> dict[str, str]:
    """`systemctl show` output (KEY=value lines, in systemd's own order)."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def last_exit(fields: dict[str, str]) -> int | None:
    """ExecMainCode is how the last run ended: 0 never, 1 exited, 2 killed, 3 dumped."""
    code, status = fields.get("ExecMainCode", "0"), fields.get("ExecMainStatus", "0")
    if code in ("", "0") or not status.lstrip("-").isdigit():
        return None
    return -int(status) if code in ("2", "3") else int(status)


class Systemd:
    manager = "systemd"

    def __init__(self, paths: Paths, user: str | None = None):
        self.paths = paths
        self.name = SERVICE_UNIT
        self.file = paths.systemd_unit
        self.user = user or getpass.getuser()

    def render(self, spec: ServiceSpec) -> bytes:
        return render_unit(spec)

    def recorded_args(self) -> list[str]:
        try:
            return recorded_args_from_unit(self.file.read_bytes())
        except (OSError, ValueError):
            return []

    def no_session(self, why: str) -> str:
        return (
            f"systemd has no user session for {self.user} here ({why}); log in normally "
            f"(ssh or desktop, not su or sudo), or let your services run without a login "
            f"with 'sudo loginctl enable-linger {self.user}', then run ./install-service.sh again"
        )

    def _ctl(self, *args: str, check: bool = True) -> proc.Result:
        """`systemctl --user ARGS`; a missing user session is always an error when checked."""
        r = proc.run(["systemctl", "--user", *args], check=False)
        if r.ok or not check:
            return r
        lines = (r.stderr or r.stdout).strip().splitlines()
        last = lines[-1] if lines else f"exit status {r.returncode}"
        if r.returncode == 127:
            raise UserError("'systemctl' was not found on PATH; this needs a Linux with systemd.")
        if any(marker in last for marker in _NO_BUS):
            raise UserError(self.no_session(f"systemctl --user: {last}"))
        raise UserError(
            f"'systemctl --user {shlex.join(args)}' failed: {last}. "
            f"See 'journalctl --user -u {self.name}'."
        )

    def state(self) -> ServiceState:
        base = StateBase(
            manager=self.manager, name=self.name, file=self.file, installed=self.file.exists()
        )
        r = self._ctl("show", self.name, f"--property={SHOW}", check=False)
        lines = (r.stderr or r.stdout).strip().splitlines()
        why = lines[-1] if lines else ""
        if r.returncode == 127 or not r.ok:
            detail = (
                "systemctl was not found"
                if r.returncode == 127
                else self.no_session(why)
                if any(m in why for m in _NO_BUS)
                else why
            )
            return ServiceState(
                **base, loaded=None, running=False, pid=None, last_exit=None, detail=detail
            )
        f = show_fields(r.stdout)
        pid = int(f.get("MainPID", "0") or 0) or None
        active = f.get("ActiveState", "")
        return ServiceState(
            **base,
            loaded=f.get("LoadState") == "loaded",
            running=active in ("active", "reloading", "deactivating") and pid is not None,
            pid=pid,
            last_exit=last_exit(f),
            state=f"{active} ({f.get('SubState', '')})",
        )

    def install(self, content: bytes, private: bool) -> list[str]:
        """Write the unit, reload, enable and (re)start it; says what it did."""
        was_running = self.state().running
        write_file(self.file, content, private)
        done = [f"wrote {self.file}"]
        try:
            self._ctl("daemon-reload")
        except UserError as e:
            raise UserError(f"wrote {self.file}, but {e}") from None
        if was_running:
            self._ctl("enable", self.name)
            self._ctl("restart", self.name)
            done.append("enabled it and restarted the running copy with the new unit")
        else:
            self._ctl("enable", "--now", self.name)
            done.append(f"enabled and started it (systemctl --user enable --now {self.name})")
        done.append("it starts at every login and restarts after a crash, not after a stop")
        linger = proc.run(["loginctl", "show-user", self.user, "--property=Linger"], check=False)
        if linger.ok and linger.stdout.strip() == "Linger=no":
            done.append(
                f"it stops when you log out; to run it from boot without a login: "
                f"sudo loginctl enable-linger {self.user}"
            )
        return done

    def uninstall(self) -> list[str]:
        done = []
        st = self.state()
        if st.loaded:
            self._ctl("disable", "--now", self.name)
            pid = f", pid {st.pid}" if st.running else ""
            done.append(f"stopped and disabled {self.name} (systemctl --user disable --now{pid})")
        if self.file.exists():
            self.file.unlink()
            done.append(f"removed {self.file}")
            if st.loaded is not None:
                self._ctl("daemon-reload", check=False)
                self._ctl("reset-failed", self.name, check=False)
            else:
                done.append(f"could not ask systemd to stop it: {st.detail}")
        return done

    def start(self) -> None:
        self._ctl("start", self.name)

    def stop(self, timeout: float) -> str | None:
        """Stop the unit (it waits up to TimeoutStopSec); None if it was not running."""
        st = self.state()
        if not st.loaded or st.state.split(" ")[0] in ("inactive", "failed", ""):
            return None
        self._ctl("stop", self.name)
        pid = f" (pid {st.pid})" if st.pid else ""
        return (
            f"stopped the login service {self.name}{pid} with 'systemctl --user stop'; it "
            "stays stopped until ./start-server.sh --service, your next login or a reboot"
        )
