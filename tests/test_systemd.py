"""The unit files in systemd/: ``systemd-analyze verify`` is clean, the offline security
exposure is 2.0 or lower, the paths and credentials agree with config/, and the agent
really runs inside the unit's system call filter with W^X memory and the allowed socket
families (set up here with libseccomp, since PID 1 on a test machine may not be systemd).

Run as ``python -m tests.test_systemd UNIT -- COMMAND...``, this module runs COMMAND under
UNIT's ``SystemCallFilter=``, ``MemoryDenyWriteExecute=``, ``RestrictAddressFamilies=`` and
``NoNewPrivileges=``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNITS = REPO / "systemd"
ANALYZE = shutil.which("systemd-analyze")
SHIPPED_BIN = "/opt/distillsync/bin/distillsync"
AGENT_UNIT = UNITS / "distillsync-agent.service"
CONSUME_UNIT = UNITS / "distillsync-consume.service"
INTAKE_UNIT = UNITS / "distillsync-intake.service"

needs_systemd = pytest.mark.skipif(
    ANALYZE is None,
    reason="systemd-analyze is not installed (Debian: apt-get install "
    "systemd), so the unit files in systemd/ were NOT checked",
)


def settings(unit: Path) -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit, in order per key (comments left out)."""
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"},
    )


def runnable_copy(unit: Path, folder: Path) -> Path:
    """The unit with its ExecStart on this checkout's ``distillsync``: verify checks that
    the program exists, and the shipped /opt/distillsync is only there once installed.
    Nothing else changes."""
    here = Path(sys.executable).parent / "distillsync"
    assert here.exists(), f"{here} missing: install the package (make test does)"
    text = unit.read_text()
    assert SHIPPED_BIN in text
    copy = folder / unit.name
    copy.write_text(text.replace(SHIPPED_BIN, str(here)))
    return copy


@needs_systemd
@pytest.mark.parametrize("unit", [AGENT_UNIT, CONSUME_UNIT, INTAKE_UNIT], ids=lambda u: u.name)
def test_systemd_analyze_verify_is_clean(unit: Path, tmp_path: Path) -> None:
    result = analyze("verify", "--man=false", str(runnable_copy(unit, tmp_path)))
    # Unknown keys and bad values are only warnings, with exit 0: clean means silent.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_systemd
@pytest.mark.parametrize("unit", [AGENT_UNIT, CONSUME_UNIT, INTAKE_UNIT], ids=lambda u: u.name)
def test_security_exposure_is_at_most_2(unit: Path) -> None:
    result = analyze("security", "--offline=true", str(unit))
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.0, result.stdout


def test_the_agent_unit_keeps_the_daemon_contract() -> None:
    unit = settings(AGENT_UNIT)
    assert unit["ExecStart"] == [f"{SHIPPED_BIN} run -c /etc/distillsync/agent.toml"]
    # agent/notify.py: READY/STATUS/WATCHDOG from the main process, pinged at half of it.
    assert (unit["Type"], unit["NotifyAccess"]) == (["notify"], ["main"])
    assert unit["WatchdogSec"] and unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    # A broken config exits 78: restarting it would only loop.
    assert (unit["Restart"], unit["RestartPreventExitStatus"]) == (["on-failure"], ["78"])
    assert unit["CapabilityBoundingSet"] == [""] and unit["UMask"] == ["0077"]


def test_the_intake_example_names_exactly_the_credentials_its_unit_loads() -> None:
    """What config/intake.toml's active keys name as *_credential is what the unit loads
    (a missing one would stop the unit; an extra one would fail its start)."""
    unit = settings(INTAKE_UNIT)
    assert unit["ExecStart"] == [f"{SHIPPED_BIN} intake -c /etc/distillsync/intake.toml"]
    assert (unit["Restart"], unit["RestartPreventExitStatus"]) == (["on-failure"], ["78"])
    text = (REPO / "config" / "intake.toml").read_text()
    active = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    named = set(re.findall(r'_credential = "([^"]+)"', active))
    assert named == loaded_credentials(INTAKE_UNIT)
    for path in re.findall(r"sqlite:///(/[^\"]+)\"", active) + re.findall(
        r"\"(/run/[^\"]+)\"", active
    ):
        assert re.match(r"/(var/lib|run)/distillsync/", path), path


def credentials_named(config: Path) -> set[tuple[str, str]]:
    return set(re.findall(r"/run/credentials/([^/\s\"]+)/([^\s\"]+)", config.read_text()))


def loaded_credentials(unit: Path) -> set[str]:
    return {value.split(":")[0] for value in settings(unit).get("LoadCredential", [])}


AGENT_EXAMPLES = sorted((REPO / "config").glob("agent.*.toml"))


def test_the_example_configs_name_credentials_and_paths_of_these_units() -> None:
    configs = REPO / "config"
    for config in [*AGENT_EXAMPLES, configs / "relay.toml"]:
        unit = CONSUME_UNIT if config.name == "relay.toml" else AGENT_UNIT
        named = credentials_named(config)
        assert {service for service, _ in named} <= {unit.name}, config
        text = config.read_text()
        for path in re.findall(r"\"(/(?:var/lib|run)/[^\"]+)\"", text) + re.findall(
            r"sqlite:///(/[^\"]+)\"", text
        ):
            if not path.startswith("/run/credentials/"):
                assert re.match(r"/(var/lib|run)/distillsync(/|$)", path), (
                    f"{config.name}: {path} is outside the unit's StateDirectory= and "
                    "RuntimeDirectory="
                )
    assert loaded_credentials(AGENT_UNIT) == {"relay-password", "erp-password"}


@pytest.mark.parametrize("example", AGENT_EXAMPLES, ids=lambda p: p.name)
def test_each_agent_example_takes_its_secrets_from_credentials_the_unit_loads(
    example: Path,
) -> None:
    """What ``distillsync check`` needs of the secrets under the shipped unit: each one the
    example names is a credential the unit loads (no *_file a check outside the unit
    cannot read, no *_env the unit does not set), and the unit loads no credential the
    example leaves unused (a missing one would stop the unit from starting)."""
    from agent.config import load_config
    from tests.test_config import secret_keys

    secrets = secret_keys(load_config(example))
    assert secrets, example.name
    assert {key: how for key, (how, _) in secrets.items() if how != "credential"} == {}, (
        f"{example.name}: every secret should be a *_credential the unit loads"
    )
    assert {name for _, name in secrets.values()} == loaded_credentials(AGENT_UNIT), example.name


@pytest.mark.parametrize("example", AGENT_EXAMPLES, ids=lambda p: p.name)
def test_each_agent_example_reads_every_secret_as_the_unit_hands_them_over(
    example: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$CREDENTIALS_DIRECTORY as systemd makes it for the shipped unit (one 0440 file per
    LoadCredential=, nothing else): the relay link and every source get their password,
    and nothing is refused. The rest of ``check`` (the queries, the relay) needs the ERP
    and the relay themselves."""
    from agent.config import load_config
    from agent.runners import source_password
    from agent.service import link_settings

    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    for name in loaded_credentials(AGENT_UNIT):
        (credentials / name).write_text(f"value-of-{name}\n")
        (credentials / name).chmod(0o440)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    config = load_config(example)
    assert link_settings(config).password == "value-of-relay-password"
    assert [source_password(source, i) for i, source in enumerate(config.sources)] == [
        "value-of-erp-password"
    ] * len(config.sources)


@pytest.mark.skipif(
    shutil.which("systemd-sysusers") is None,
    reason="systemd-sysusers is not installed: systemd/distillsync.sysusers was NOT checked",
)
def test_sysusers_creates_the_user_both_units_run_as(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    result = subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", str(UNITS / "distillsync.sysusers")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    user = next(
        line.split(":")
        for line in (tmp_path / "etc/passwd").read_text().splitlines()
        if line.startswith("distillsync:")
    )
    assert user[5:] == ["/var/lib/distillsync", "/usr/sbin/nologin"]
    assert "distillsync:" in (tmp_path / "etc/group").read_text()
    for unit in (AGENT_UNIT, CONSUME_UNIT, INTAKE_UNIT):
        assert (settings(unit)["User"], settings(unit)["Group"]) == (["distillsync"],) * 2


# --- the sandbox: the unit's seccomp-based settings, applied without systemd ---------------

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_LT, SCMP_CMP_EQ, SCMP_CMP_GT, SCMP_CMP_MASKED_EQ = 2, 4, 6, 7  # enum scmp_compare
PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
PR_SET_NO_NEW_PRIVS = 38


def scmp_act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def syscall_groups() -> dict[str, list[str]]:
    """``systemd-analyze syscall-filter``: each @group's members (calls and @groups)."""
    groups: dict[str, list[str]] = {}
    members: list[str] | None = None
    for line in analyze("syscall-filter").stdout.splitlines():
        if line.startswith("@"):
            members = groups.setdefault(line.strip(), [])
        elif line.startswith("    ") and members is not None and "#" not in line:
            members.append(line.strip())
        elif not line.strip():
            members = None
    return groups


def expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    calls: set[str] = set()
    for name in names:
        calls |= expand(groups[name], groups) if name.startswith("@") else {name}
    return calls


def allowed_syscalls(unit: Path) -> set[str]:
    """What the unit's ``SystemCallFilter=`` lines allow: the first is an allow list, each
    ``~`` line takes its calls out again (systemd.exec(5))."""
    groups = syscall_groups()
    allowed: set[str] = set()
    for value in settings(unit)["SystemCallFilter"]:
        if value.startswith("~"):
            allowed -= expand(value[1:].split(), groups)
        else:
            allowed |= expand(value.split(), groups)
    return allowed


def address_families(unit: Path) -> list[int]:
    (value,) = settings(unit)["RestrictAddressFamilies"]
    return sorted(int(getattr(socket, name)) for name in value.split())


class Seccomp:
    """A libseccomp filter, built and loaded through ctypes."""

    def __init__(self, default_action: int) -> None:
        self.lib = ctypes.CDLL(
            ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True
        )
        self.lib.seccomp_init.restype = ctypes.c_void_p
        self.lib.seccomp_init.argtypes = [ctypes.c_uint32]
        self.lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        self.lib.seccomp_rule_add_array.argtypes = [
            ctypes.c_void_p,
            ctypes.c_uint32,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.POINTER(ArgCmp),
        ]
        self.lib.seccomp_load.argtypes = [ctypes.c_void_p]
        self.ctx = self.lib.seccomp_init(default_action)
        assert self.ctx, "seccomp_init failed"

    def rule(self, action: int, name: str, *compare: ArgCmp) -> None:
        number = self.lib.seccomp_syscall_resolve_name(name.encode())
        if number < 0:
            return  # not a system call on this architecture
        array = (ArgCmp * len(compare))(*compare) if compare else None
        result = self.lib.seccomp_rule_add_array(self.ctx, action, number, len(compare), array)
        assert result == 0, f"seccomp_rule_add({name}): {os.strerror(-result)}"

    def load(self) -> None:
        result = self.lib.seccomp_load(self.ctx)
        assert result == 0, f"seccomp_load: {os.strerror(-result)}"


def confine(unit: Path) -> None:
    """This process and what it executes get the unit's seccomp-based restrictions, as
    systemd 252 builds them: separate filters, the strictest answer wins."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0  # NoNewPrivileges=yes
    eperm = scmp_act_errno(errno.EPERM)  # SystemCallErrorNumber=EPERM
    no_wx = Seccomp(SCMP_ACT_ALLOW)  # MemoryDenyWriteExecute=yes
    both = PROT_WRITE | PROT_EXEC
    no_wx.rule(eperm, "mmap", ArgCmp(2, SCMP_CMP_MASKED_EQ, both, both))
    for call in ("mprotect", "pkey_mprotect"):
        no_wx.rule(eperm, call, ArgCmp(2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC))
    no_wx.rule(eperm, "shmat", ArgCmp(2, SCMP_CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC))
    families = address_families(unit)  # RestrictAddressFamilies=
    refuse = scmp_act_errno(errno.EAFNOSUPPORT)
    no_wx.rule(refuse, "socket", ArgCmp(0, SCMP_CMP_LT, families[0], 0))
    no_wx.rule(refuse, "socket", ArgCmp(0, SCMP_CMP_GT, families[-1], 0))
    for family in range(families[0], families[-1]):
        if family not in families:
            no_wx.rule(refuse, "socket", ArgCmp(0, SCMP_CMP_EQ, family, 0))
    no_wx.load()
    # Last: the allow list does not allow seccomp() itself.
    allow_list = Seccomp(eperm)
    for name in sorted(allowed_syscalls(unit)):
        allow_list.rule(SCMP_ACT_ALLOW, name)
    allow_list.load()


def sandboxed(unit: Path, *command: str) -> list[str]:
    return [sys.executable, "-m", "tests.test_systemd", str(unit), "--", *command]


PROBE = """
import mmap, os, socket, sys
def refused(what, action):
    try:
        action()
    except OSError as error:
        print(what, "refused:", error.strerror)
    else:
        print(what, "ALLOWED")
refused("W+X memory", lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_WRITE | mmap.PROT_EXEC))
refused("netlink socket", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW))
refused("setuid", lambda: os.setuid(0))
refused("setpriority", lambda: os.setpriority(os.PRIO_PROCESS, 0, 5))
for family in (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6):
    socket.socket(family).close()
print("ok")
"""


@needs_systemd
def test_the_sandbox_refuses_what_the_unit_forbids() -> None:
    """Without this, the agent passing below could mean the sandbox did nothing."""
    result = subprocess.run(
        sandboxed(AGENT_UNIT, sys.executable, "-c", PROBE),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n") == [
        "W+X memory refused: Operation not permitted",
        "netlink socket refused: Address family not supported by protocol",
        "setuid refused: Operation not permitted",
        "setpriority refused: Operation not permitted",
        "ok",
        "",
    ]


@needs_systemd
def test_the_agent_runs_inside_the_units_sandbox(broker: object, tmp_path: Path) -> None:
    # Imported here: run as a program, this module only confines itself and executes.
    from tests.support import (
        AgentProcess,
        Collector,
        Mosquitto,
        agent_toml,
        stock_levels_source,
        wait_until,
    )

    assert isinstance(broker, Mosquitto)
    erp = tmp_path / "erp.db"
    with contextlib.closing(sqlite3.connect(erp)) as db, db:
        db.execute("CREATE TABLE stock_levels (sku TEXT, warehouse TEXT, on_hand REAL, tms TEXT)")
        db.execute("INSERT INTO stock_levels VALUES ('A', 'W', 1, '2026-01-01 00:00:00')")
    config = tmp_path / "agent.toml"
    config.write_text(
        agent_toml(tmp_path / "state", broker.url, stock_levels_source(erp), agent_id="sandboxed")
    )
    agent = AgentProcess(
        config, tmp_path / "agent.log", prefix=sandboxed(AGENT_UNIT, sys.executable, "-m", "cli")
    )
    with Collector(broker.port, "distillsync/acme/sandboxed/#") as sub, agent:
        proc = agent.proc
        assert proc is not None
        wait_until(
            lambda: "ready" in agent.output() or proc.poll() is not None,
            30,
            "the sandboxed agent ready",
        )
        assert proc.poll() is None, agent.output()
        sub.wait_for(lambda events: len(events) == 1, 30, "its first event")
        status = subprocess.run(
            [sys.executable, "-m", "cli", "status", "-c", str(config)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stdout + status.stderr
        assert agent.terminate() == 0, agent.output()
    assert "Traceback" not in agent.output() and "ERROR" not in agent.output()


if __name__ == "__main__":
    separator = sys.argv.index("--")
    confine(Path(sys.argv[1]))
    command = sys.argv[separator + 1 :]
    os.execv(command[0], command)
