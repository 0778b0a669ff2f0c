"""The offline check: the old job over an exported file (DESIGN §6, docs/offline-check.md).

Reads every document of the input, evaluates the selected users at ``now``, optionally
writes all documents back (changed ones changed) to ``output``, and writes the check-log
document(s) as JSON to ``log_out``: one document per line; more than one line only when
the log is split into parts.

Nothing is written unless the whole input was read and the check log was written: the
output file appears only after the last document was checked and the check log reached
``log_out``; if writing the check log fails, no output file appears. Memory does not grow
with an NDJSON input (one line at a time; check-log entries spill to disk when many).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, BinaryIO

from consumer.domain.checklog import (
    DEFAULT_MAX_BYTES,
    check_log_header,
    header_budget,
    plan_parts,
    user_log,
)
from consumer.domain.rules import apply_transitions, evaluate_user, read_user_id
from consumer.domain.times import as_utc, truncate_to_milliseconds
from consumer.errors import DocumentError, FileInputError
from consumer.offline import extjson
from consumer.offline.formats import AtomicOutput, DocumentWriter, detect_format, read_records
from consumer.offline.logspill import SortedLogSpill

if TYPE_CHECKING:
    from datetime import datetime
    from pathlib import Path

    from consumer.offline.formats import InputRecord


class CheckLogOutputError(FileInputError):
    """The check log could not be written (standard output closed or full)."""


@dataclass(frozen=True, slots=True)
class OfflineCheck:
    """What to check: ``user_id`` None means all users; ``output`` None means a dry run."""

    input_path: Path
    now: datetime
    user_id: int | None = None
    output_path: Path | None = None
    max_log_bytes: int = DEFAULT_MAX_BYTES


@dataclass(frozen=True, slots=True)
class OfflineCheckResult:
    documents: int
    users_checked: int
    passes_checked: int
    transitions: int
    skipped: int
    log_documents: int


def run_offline_check(check: OfflineCheck, log_out: BinaryIO) -> OfflineCheckResult:
    """Run ``check``; raises :class:`FileInputError` (nothing written) for unusable input.

    ``now`` is taken to the millisecond, the precision of ``check_time`` and BSON dates.
    """
    check = replace(check, now=truncate_to_milliseconds(as_utc(check.now)))
    input_format = detect_format(check.input_path)
    output = AtomicOutput(check.output_path) if check.output_path is not None else None
    counts = _Counts()
    with SortedLogSpill() as spill, output if output is not None else nullcontext():
        writer = DocumentWriter(output, input_format) if output is not None else None
        for record in read_records(check.input_path, input_format):
            _check_record(check, record, spill, writer, counts)
        if writer is not None:
            writer.finish()
        try:
            log_documents = _write_check_log(check, spill, log_out)
        except OSError as exc:
            # The output file is not committed: a failed check writes no file.
            raise CheckLogOutputError(
                f"cannot write the check log to standard output: {exc.strerror or exc}"
            ) from None
        if output is not None:
            output.commit()  # only once the check log is out
    return OfflineCheckResult(
        documents=counts.documents,
        users_checked=counts.users,
        passes_checked=counts.passes,
        transitions=counts.transitions,
        skipped=counts.skipped,
        log_documents=log_documents,
    )


class _Counts:
    __slots__ = ("documents", "passes", "skipped", "transitions", "users")

    def __init__(self) -> None:
        self.documents = self.users = self.passes = self.transitions = self.skipped = 0


def _check_record(
    check: OfflineCheck,
    record: InputRecord,
    spill: SortedLogSpill,
    writer: DocumentWriter | None,
    counts: _Counts,
) -> None:
    if record.blank:
        if writer is not None:
            writer.unchanged(record)
        return
    counts.documents += 1
    document = record.document
    if not isinstance(document, dict):
        raise FileInputError(f"{record.where}: document is not a JSON object")
    try:
        user_id = read_user_id(document)
    except DocumentError as exc:
        raise FileInputError(f"{record.where}: {exc}") from None
    if check.user_id is not None and user_id != check.user_id:
        if writer is not None:
            writer.unchanged(record)
        return

    evaluation = evaluate_user(document, check.now)
    counts.users += 1
    passes = document.get("passes")
    counts.passes += len(passes) if isinstance(passes, list) else 0
    counts.transitions += len(evaluation.transitions)
    counts.skipped += len(evaluation.skipped)
    entry = user_log(evaluation)
    if entry is not None:
        spill.add(entry)
    if writer is None:
        return
    if evaluation.transitions:
        writer.changed(record, apply_transitions(document, evaluation.transitions))
    else:
        writer.unchanged(record)


def _write_check_log(check: OfflineCheck, spill: SortedLogSpill, log_out: BinaryIO) -> int:
    """Stream the check-log document(s) to ``log_out``; returns how many were written."""
    edit_mode = check.output_path is not None
    header_bytes = header_budget(check.now, check.user_id, edit_mode)
    counts = plan_parts((e.bson_size for e in spill.entries()), header_bytes, check.max_log_bytes)
    entries = spill.entries()
    for number, count in enumerate(counts, start=1):
        if len(counts) == 1:
            header = check_log_header(check.now, check.user_id, edit_mode)
        else:
            header = check_log_header(check.now, check.user_id, edit_mode, number, len(counts))
            header["_id"] += number - 1
        # The header object without its closing brace, then the log array, entry by entry.
        log_out.write(extjson.dumps(header)[:-1] + b',"log":[')
        for position in range(count):
            entry = next(entries)
            log_out.write(entry.json if position == 0 else b"," + entry.json)
        log_out.write(b"]}\n")
    log_out.flush()
    return len(counts)
