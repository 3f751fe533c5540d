"""``make guarantees``: each guarantee of DESIGN.md must be kept by a test that fails without it.

A curated list of mutations, each of which breaks one guarantee the way a plausible bug
would (acknowledging before applying, a sweep that starts from the wrong base, a lost
connection counted as a PUBACK, ...), and the tests that must catch it. In a scratch copy
of the repository's files (``git ls-files``, with new files not yet added but not ignored,
as they are in the working tree), this script

1. checks that the copy is what gets imported (not the editable install of this checkout),
2. runs every listed test unmutated: they must pass, or a failure later means nothing,
3. applies each mutation in turn to a fresh copy of its file (its old text must occur
   exactly once, else the list needs updating), runs its tests with ``-x`` and expects a
   failure, then puts the file back,

and prints a table: mutation, guarantee, killed / SURVIVED, by which test, seconds. It
exits 1 if a mutation survived, no longer applies, has no test yet, or broke the run
(a collection error is not a test catching anything). This checkout is never modified.

Run: ``make guarantees``, ``.venv/bin/python -m tests.guarantees [NAME ...]``, or
``GUARANTEES=name1,name2 make guarantees`` for a subset; ``--list`` prints the list.
To add one: append a :class:`Mutation` to :data:`MUTATIONS` with the smallest edit that
breaks a guarantee, and the node ids of the tests that must catch it; run it alone and
see it killed (if it survives, the guarantee needs a test first).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT = 1200.0  # seconds for one pytest run; each test has its own 300 s timeout too

GUARANTEES = {
    1: "no change is missed",
    2: "nothing enqueued twice",
    3: "delivered means acknowledged",
    4: "absolute state",
    5: "durable by default",
    6: "bad input never stops the pipeline",
    7: "exactly-once effect inbound",
}


@dataclass(frozen=True, slots=True)
class Mutation:
    name: str
    guarantee: int
    """Its number in DESIGN.md's "Guarantees"."""
    path: str
    old: str
    """Must occur exactly once in ``path``."""
    new: str
    tests: tuple[str, ...]
    """Node ids that must catch it; empty: no test does yet (reported, and a failure)."""
    what: str
    """The bug, in a line."""


MODEL = "tests/test_capture_model.py::"
PUBLISHER = "tests/test_publisher.py::"
STORE = "tests/test_relay_store.py::"
CONSUMER = "tests/test_relay_consumer.py::"
DURABILITY = "tests/test_outbox_durability.py::"

MUTATIONS: tuple[Mutation, ...] = (
    # --- 1. no change is missed --------------------------------------------------------
    Mutation(
        "sweep-from-cursor",
        1,
        "agent/modes/timestamp.py",
        "base = self._sweep_base if self._sweep_base is not None else stored",
        "base = stored",
        (
            f"{MODEL}test_sqlite_outbox_ends_with_the_erps_state_over_random_histories",
            f"{MODEL}test_a_late_commit_in_the_last_third_of_the_lookback_is_swept_up",
        ),
        "a sweep re-reads from the current cursor - lookback, not the previous sweep's base",
    ),
    Mutation(
        "skip-any-fingerprint",
        1,
        "agent/modes/fingerprints.py",
        "            if fingerprint == last:\n"
        "                self._recent.setdefault(key, fingerprint)",
        "            if fingerprint in (self._recent.get(key), self._older.get(key)):\n"
        "                self._recent[key] = fingerprint",
        (
            f"{MODEL}test_sqlite_outbox_ends_with_the_erps_state_over_random_histories",
            f"{MODEL}test_a_revert_across_a_sweep_is_published",
        ),
        "a re-read row equal to any remembered state is skipped, and that state kept as "
        "the last (4832b4c's bug: A, a sweep, B, A again is never published)",
    ),
    Mutation(
        "timestamp-strictly-after",
        1,
        "agent/sources/sql.py",
        'op = ">=" if self.entity.mode == "timestamp" else ">"',
        'op = ">"',
        (
            "tests/test_backends.py::"
            "test_same_second_commits_all_arrive_and_rereads_emit_nothing[sqlite-0s]",
        ),
        "timestamp reads `cursor > low` (Kafka Connect's bug): same-tick commits missed",
    ),
    Mutation(
        "incrementing-no-holdback",
        1,
        "agent/modes/incrementing.py",
        "cutoff = math.inf if first_load else self._clock() - self.entity.lookback",
        "cutoff = math.inf",
        (
            "tests/test_backend_incrementing.py::"
            "test_an_id_that_appears_below_the_highest_read[sqlite-1h]",
        ),
        "incrementing cursor settles at once: an id committed after a higher one is skipped",
    ),
    Mutation(
        "snapshot-no-deletes",
        1,
        "agent/modes/snapshot.py",
        "        totals += await self._delete_unseen(poller, generation)\n",
        "",
        ("tests/test_backends.py::test_inserts_updates_and_deletes_reach_the_subscriber[sqlite]",),
        "a complete snapshot pass never looks for the keys it did not see (deletes lost)",
    ),
    # --- 2. nothing is enqueued twice for the same state ---------------------------------
    Mutation(
        "cursor-before-events",
        2,
        "agent/outbox.py",
        "        self._check_file()\n        async with self._transaction() as db:\n"
        "            known = await self._known_hashes(db, page)",
        "        self._check_file()\n        if page.cursor is not None:\n"
        "            async with self._transaction() as db:\n"
        "                await self._upsert_feed(db, page.feed, page.cursor, None)\n"
        "        async with self._transaction() as db:\n"
        "            known = await self._known_hashes(db, page)",
        ("tests/test_outbox.py::test_a_page_and_its_cursor_commit_together_or_not_at_all",),
        "a page's cursor commits in its own transaction before the page's events",
    ),
    Mutation(
        "unchanged-row-enqueued",
        2,
        "agent/outbox.py",
        'if change.op == "upsert" and known.get(change.subject) == change.row_hash:',
        "if False:",
        ("tests/test_outbox.py::test_unchanged_state_is_enqueued_once",),
        "a row whose hash is the stored one is enqueued again",
    ),
    # --- 3. delivered means acknowledged ---------------------------------------------------
    Mutation(
        "lost-link-counts-as-acked",
        3,
        "agent/publisher.py",
        "future.set_result(Ack(Outcome.UNKNOWN, why))",
        "future.set_result(Ack(Outcome.ACKED))",
        (f"{PUBLISHER}test_a_publish_with_no_puback_stays_pending_and_is_delivered_later",),
        "publishes still unanswered when the link dies are marked delivered",
    ),
    Mutation(
        "negative-puback-delivered",
        3,
        "agent/publisher.py",
        "if self.mqtt5 and code.value >= _FIRST_FAILURE_CODE:",
        "if False:",
        (f"{PUBLISHER}test_a_negative_puback_is_a_dead_letter_not_a_delivery",),
        "a PUBACK with a failure reason code (0x87 not authorized) is a delivery",
    ),
    Mutation(
        "reconnect-skips-unacked",
        3,
        "agent/delivery.py",
        "        after = 0\n        while not self.stop.is_set()",
        "        after = self._sent_high\n        while not self.stop.is_set()",
        (f"{PUBLISHER}test_a_publish_with_no_puback_stays_pending_and_is_delivered_later",),
        "after a reconnect delivery goes on after the last sent, not the oldest pending",
    ),
    Mutation(
        "consumer-acks-before-apply",
        3,
        "relay/consumer.py",
        "            batch = await self.scheduler.next_batch()\n",
        "            batch = await self.scheduler.next_batch()\n            self._finish(batch)\n",
        ("tests/test_relay_ack.py::test_a_consumer_killed_while_applying_loses_nothing",),
        "the relay consumer acknowledges a batch before applying it",
    ),
    Mutation(
        "store-equal-sequence-fresh",
        3,
        "relay/store.py",
        "if (floor is None or event.sequence > floor) and (",
        "if (floor is None or event.sequence >= floor) and (",
        (f"{STORE}test_record_advances_versions_and_never_moves_them_back[sqlite]",),
        "the version gate applies an event whose sequence equals the key's last one",
    ),
    Mutation(
        "store-older-sequence-fresh",
        3,
        "relay/store.py",
        "if (floor is None or event.sequence > floor) and (",
        "if (floor is None or event.sequence != floor) and (",
        (
            f"{STORE}test_record_advances_versions_and_never_moves_them_back[sqlite]",
            f"{CONSUMER}test_duplicates_and_old_states_never_reach_the_shop",
        ),
        "the version gate applies an older state over a newer one",
    ),
    Mutation(
        "consumer-records-nothing",
        3,
        "relay/consumer.py",
        "            claim.record(claim.fresh)\n",
        "",
        (f"{CONSUMER}test_duplicates_and_old_states_never_reach_the_shop",),
        "the consumer applies a batch but records neither ids nor versions",
    ),
    Mutation(
        "watermark-check-skipped",
        3,
        "agent/delivery.py",
        "move = await self.outbox.move_sequence_above(watermark)",
        "move = None",
        (
            "tests/test_sequence_floor.py::"
            "test_changes_after_the_outbox_went_back_still_reach_the_shop[the outbox lost-5]",
        ),
        "on connect the outbox is not moved above the relay's retained sequence watermark",
    ),
    Mutation(
        "restored-pending-not-renumbered",
        3,
        "agent/outbox.py",
        "renumbered = await self._renumber_pending(db, last, floor + 1 - int(row[1]))",
        "renumbered = 0",
        (
            "tests/test_sequence_floor.py::"
            "test_a_restored_backups_pending_events_are_renumbered_and_applied",
        ),
        "a restored backup's pending events keep their old numbers, below the watermark",
    ),
    # --- 5. durable by default -------------------------------------------------------------
    Mutation(
        "config-synchronous-normal",
        5,
        "agent/config.py",
        'synchronous: Literal["full", "normal"] = "full"',
        'synchronous: Literal["full", "normal"] = "normal"',
        (
            f"{DURABILITY}test_the_config_default_is_full",
            f"{DURABILITY}test_a_running_agents_outbox_connections_are_synchronous_full",
        ),
        "the agent's default [outbox] synchronous is normal",
    ),
    Mutation(
        "outbox-open-synchronous-normal",
        5,
        "agent/outbox.py",
        'synchronous: str = "full"',
        'synchronous: str = "normal"',
        ("tests/test_outbox.py::test_durable_by_default_wal_and_synchronous_full",),
        "Outbox.open's own default is synchronous=NORMAL",
    ),
    # --- 6. bad input never stops the pipeline ------------------------------------------------
    Mutation(
        "capture-dead-row-dropped",
        6,
        "agent/poller.py",
        "                dead.append(mapped)",
        "                pass",
        ("tests/test_bad_input.py::test_unmappable_rows_are_dead_letters_and_the_rest_flows",),
        "a row that cannot be mapped is dropped without a dead letter",
    ),
    Mutation(
        "relay-invalid-not-kept",
        6,
        "relay/consumer.py",
        "        await self.store.add_dead_letter(incoming.payload, incoming.topic, reason)\n",
        "",
        (f"{CONSUMER}test_invalid_messages_become_dead_letters_and_the_rest_flows",),
        "an invalid inbound message is acknowledged without a dead letter",
    ),
    Mutation(
        "relay-sink-dead-not-kept",
        6,
        "relay/consumer.py",
        "                        claim.dead(event, result.reason, sink.name)",
        "                        pass",
        (
            f"{CONSUMER}test_a_shop_that_is_down_holds_the_batch_and_an_unknown_sku_is_a_dead_letter",
        ),
        "an event a sink declares dead (unknown SKU) is recorded without a dead letter",
    ),
)


@dataclass(frozen=True, slots=True)
class Outcome:
    mutation: Mutation
    result: str  # killed | SURVIVED | NOT APPLIED | NO TEST | BROKEN
    by: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.result == "killed"


# --- the scratch copy --------------------------------------------------------------------


def tracked_files() -> list[str]:
    """What git tracks, and the new files it would track (not ignored): the working tree as
    ``make test`` sees it, where a tracked file may already import a file not added yet."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    return [name for name in listed.decode().split("\0") if name]


def copy_tree(scratch: Path) -> int:
    """The files as they are in the working tree (one deleted there is left out)."""
    copied = 0
    for name in tracked_files():
        source = ROOT / name
        if not source.is_file():
            continue
        target = scratch / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
        copied += 1
    return copied


def python() -> str:
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def environment(scratch: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(scratch), env.get("PYTHONPATH")]))
    # No bytecode: a mutant and its original may share a size and an mtime second, and a
    # stale .pyc would then run the wrong one.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check_imports(scratch: Path, env: dict[str, str]) -> None:
    probe = "import agent, relay, tests; print(agent.__file__); print(relay.__file__)"
    found = subprocess.run(
        [python(), "-c", probe], cwd=scratch, env=env, check=True, capture_output=True, text=True
    ).stdout.split()
    print(f"imports: {found[0]}", flush=True)
    if not all(Path(f).resolve().is_relative_to(scratch.resolve()) for f in found):
        sys.exit(
            f"the scratch copy is not what gets imported ({', '.join(found)}); "
            f"a mutation there would test {ROOT} instead"
        )


# --- running tests ------------------------------------------------------------------------


def run_pytest(
    scratch: Path, env: dict[str, str], tests: Sequence[str], stop_at_first: bool
) -> tuple[int | None, str]:
    """pytest's exit code (``None``: the run itself timed out) and its output."""
    command = [
        python(),
        "-m",
        "pytest",
        "-n",
        "0",
        "-q",
        "-p",
        "no:cacheprovider",
        *(["-x"] if stop_at_first else []),
        *tests,
    ]
    with subprocess.Popen(
        command,
        cwd=scratch,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            output, _ = proc.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its brokers and agents too
            output, _ = proc.communicate()
            return None, output
    return proc.returncode, output


# In pytest's short summary (-ra); a node id may hold spaces, a captured log line ("ERROR
# <spaces> logger:...") starts with more than one.
_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S.*?)(?: - .*)?$", re.MULTILINE)


def first_failure(output: str) -> str:
    summary = output.rpartition("short test summary info")[2]
    match = _FAILED.search(summary)
    return match.group(1) if match else "?"


def judge(mutation: Mutation, code: int | None, output: str) -> tuple[str, str]:
    if code is None:
        return "killed", f"timeout after {RUN_TIMEOUT:.0f}s"
    if code == 0:
        return "SURVIVED", "every listed test passed"
    if code == 1:  # pytest: tests failed
        return "killed", first_failure(output)
    tail = output.strip().splitlines()[-1:] or ["no output"]
    return "BROKEN", f"pytest exit {code}: {tail[0][:80]}"


def mutate(scratch: Path, env: dict[str, str], mutation: Mutation) -> Outcome:
    began = time.monotonic()
    target = scratch / mutation.path
    original = target.read_text(encoding="utf-8")
    found = original.count(mutation.old)
    if found != 1:
        return Outcome(
            mutation,
            "NOT APPLIED",
            f"old text found {found} times in {mutation.path}: "
            f"mutation no longer applies: update the list",
            0.0,
        )
    if not mutation.tests:
        return Outcome(mutation, "NO TEST", "no test guards this yet", 0.0)
    target.write_text(original.replace(mutation.old, mutation.new), encoding="utf-8")
    try:
        code, output = run_pytest(scratch, env, mutation.tests, stop_at_first=True)
    finally:
        target.write_text(original, encoding="utf-8")
    result, by = judge(mutation, code, output)
    return Outcome(mutation, result, by, time.monotonic() - began)


# --- the report ---------------------------------------------------------------------------


def guarantee_text(number: int) -> str:
    return f"{number}. {GUARANTEES[number]}"


def table(outcomes: Sequence[Outcome]) -> str:
    rows = [("mutation", "guarantee", "result", "by", "s")]
    rows += [
        (o.mutation.name, guarantee_text(o.mutation.guarantee), o.result, o.by, f"{o.seconds:.1f}")
        for o in outcomes
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True))
        + f"  {row[4]:>6}"
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def listing() -> str:
    return "\n".join(
        f"{m.name:32} {guarantee_text(m.guarantee):40} {m.path}: {m.what}" for m in MUTATIONS
    )


def select(names: Sequence[str]) -> list[Mutation]:
    if not names:
        return list(MUTATIONS)
    known = {m.name: m for m in MUTATIONS}
    unknown = [n for n in names if n not in known]
    if unknown:
        sys.exit(f"unknown mutation {', '.join(unknown)}; known:\n{listing()}")
    return [known[n] for n in names]


def requested(argv: Sequence[str]) -> list[str]:
    names = [n for arg in argv for n in arg.split(",") if n]
    names += [n.strip() for n in os.environ.get("GUARANTEES", "").split(",") if n.strip()]
    return names


def baseline(scratch: Path, env: dict[str, str], chosen: Sequence[Mutation]) -> None:
    tests = list(dict.fromkeys(t for m in chosen for t in m.tests))
    if not tests:
        return
    count = f"{len(tests)} test{'s' if len(tests) > 1 else ''}"
    print(f"unmutated: {count} ...", flush=True)
    began = time.monotonic()
    code, output = run_pytest(scratch, env, tests, stop_at_first=False)
    if code != 0:
        print(output[-6000:])
        sys.exit(
            f"the listed tests fail without any mutation (pytest exit {code}): "
            "fix them first, or a killed mutation means nothing"
        )
    print(f"unmutated: {count} passed ({time.monotonic() - began:.1f}s)", flush=True)


def main(argv: Sequence[str]) -> int:
    if "--list" in argv:
        print(listing())
        return 0
    chosen = select(requested(argv))
    began = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="distillsync-guarantees-"))
    try:
        print(f"scratch copy: {copy_tree(scratch)} files in {scratch}", flush=True)
        env = environment(scratch)
        check_imports(scratch, env)
        baseline(scratch, env, chosen)
        outcomes = []
        for n, mutation in enumerate(chosen, start=1):
            outcome = mutate(scratch, env, mutation)
            outcomes.append(outcome)
            print(
                f"[{n:2}/{len(chosen)}] {mutation.name}: {outcome.result} "
                f"({outcome.by}, {outcome.seconds:.1f}s)",
                flush=True,
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print()
    print(table(outcomes))
    failed = [o for o in outcomes if not o.ok]
    print(
        f"\n{len(outcomes) - len(failed)} of {len(outcomes)} mutations killed in "
        f"{time.monotonic() - began:.0f}s"
    )
    if failed:
        print("not killed: " + ", ".join(f"{o.mutation.name} ({o.result})" for o in failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
