"""Benchmark one secure-aggregation round against plaintext and shared-key CKKS baselines.

    python -m bench.secagg --params 4000000 --group 8 --json out.json
    python -m bench.secagg --protocol bfv-mask-shamir-v2 ...   # the previous protocol

Runs all k members of one round in this process over an in-memory transport, with the
real spawn process pool doing the HE work, then measures:
  * per-peer CPU seconds (worker CPU + CPU the member spent on the event loop),
  * bytes sent / received per peer and at the aggregator A and decryptor D,
  * peak RSS of an aggregator-only replay (a fresh process that receives the recorded
    uploads through A's code path: checked, spooled to disk, summed chunk by chunk from
    the spool), and of the whole benchmark process,
  * plaintext fp32 averaging over the same star topology, and a single-shared-key CKKS
    baseline (N=8192, [60, 40, 40], scale 2^40) for one peer's update.
Prints a table and writes JSON with machine and library versions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fedswarm.secagg.accumulator import CiphertextAccumulator
from fedswarm.secagg.chunks import add_prefix, chunk_ciphertexts, read_prefix, stream_chunk_count
from fedswarm.secagg.he import (
    EncryptJob,
    load_public_context,
    make_executor,
    segment_jobs,
    silence_native_stdout,
)
from fedswarm.secagg.messages import (
    RoundBinding,
    Step,
    decode_message,
    encode_message,
    peek_binding,
)
from fedswarm.secagg.params import PROTOCOL_V3, PROTOCOLS, SecAggParams
from fedswarm.secagg.payloads import ContextPayload, SumPayload, UploadPayload
from fedswarm.secagg.plain_add import plain_addend
from fedswarm.secagg.quantise import QuantisationGrid
from fedswarm.secagg.roles import assign_roles
from fedswarm.secagg.session import AggregationResult, GroupSpec, run_secure_aggregation
from fedswarm.secagg.signing import Ed25519Signer, verifier_from_keys
from fedswarm.secagg.spool import RoundSpool, sum_window

from . import child_env, module_command
from .machine import cpu_model

TARGET_PEER_CPU_S = 1.2  # issue #20, this 2-core box, 4 M values, k = 8
TARGET_BYTES_RATIO = 4.5
TARGET_UPLOAD_RATIO = 1.5  # issue #20: a member's upload against fp32
TARGET_A_RSS_MB = 1500.0


def _replay(n: int, k: int, params: SecAggParams, flag: str) -> dict[str, float]:
    """Run one role's replay in a fresh process; its JSON line is the last of stdout."""
    completed = subprocess.run(
        module_command(
            "secagg", "--params", str(n), "--group", str(k), "--protocol", params.protocol, flag
        ),
        env=child_env(),
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def params_for(protocol: str) -> SecAggParams:
    return SecAggParams.v3() if protocol == PROTOCOL_V3 else SecAggParams()


class RecordingTransport:
    """In-memory queues; copies every message addressed to the aggregator to disk."""

    def __init__(
        self, queues: dict[str, asyncio.Queue[tuple[str, bytes]]], me: str, record: Path
    ) -> None:
        self.queues, self.me, self.record = queues, me, record
        self.sent: dict[Step, int] = {}

    recording_cpu_s = 0.0  # bench-only work, subtracted from the round's CPU total

    async def send(self, recipient: str, data: bytes) -> None:
        _, step, _ = peek_binding(data)
        if step in (Step.UPLOAD, Step.CONTEXT) and recipient == self.record.name:
            start = time.thread_time()
            sequence = self.sent[step] = self.sent.get(step, -1) + 1  # UPLOAD: one per chunk
            (self.record / f"{int(step)}-{self.me}-{sequence:05d}.msg").write_bytes(data)
            RecordingTransport.recording_cpu_s += time.thread_time() - start
        await self.queues[recipient].put((self.me, data))

    async def receive(self, timeout: float) -> tuple[str, bytes]:
        return await asyncio.wait_for(self.queues[self.me].get(), timeout)


@dataclass(frozen=True)
class RoundRun:
    results: list[AggregationResult]
    wall_s: float
    members: tuple[str, ...]
    total_cpu_s: float  # this process + its pool workers during the round, minus recording
    recording_cpu_s: float
    max_abs_error: float  # secure average vs the float64 weighted average


def _process_cpu_s(pid: int) -> float:
    """utime + stime of a live process from /proc (the pool workers are not reaped yet)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _round_cpu_s(worker_pids: list[int]) -> float:
    """CPU of this process and of the given workers: everything the k members spent."""
    own = os.times()
    return own.user + own.system + sum(_process_cpu_s(pid) for pid in worker_pids)


async def _run_round(
    n_params: int, k: int, params: SecAggParams, workdir: Path, keys_file: Path
) -> RoundRun:
    members = tuple(f"peer-{i:02d}" for i in range(k))
    spec = GroupSpec("bench-fed", "bench-group", 1, members)
    aggregator, _ = assign_roles(members, spec.round, spec.group_id)
    record = workdir / aggregator
    record.mkdir()
    signers = {m: Ed25519Signer.generate(m) for m in members}
    keys_file.write_text(json.dumps({m: s.verify_key.hex() for m, s in signers.items()}))
    verify = verifier_from_keys({m: s.verify_key for m, s in signers.items()})
    queues: dict[str, asyncio.Queue[tuple[str, bytes]]] = {m: asyncio.Queue() for m in members}
    rng = np.random.default_rng(0)
    updates = [rng.uniform(-0.5, 0.5, n_params).astype(np.float32) for _ in members]
    weights = [float(w) for w in rng.integers(200, 5000, k)]  # sample counts, as the daemon
    executor = make_executor(min(2, os.cpu_count() or 1))
    try:
        # warm the workers so process start-up is not charged to the round
        list(executor.map(silence_native_stdout_and_import, range(2)))
        worker_pids = list(executor._processes)  # stdlib keeps them; no public accessor
        cpu_before = _round_cpu_s(worker_pids)
        recording_before = RecordingTransport.recording_cpu_s
        start = time.monotonic()
        results = await asyncio.gather(
            *(
                run_secure_aggregation(
                    spec,
                    signers[m],
                    verify,
                    updates[i],
                    weights[i],
                    RecordingTransport(queues, m, record),
                    params,
                    step_timeout_s=600.0,
                    executor=executor,
                )
                for i, m in enumerate(members)
            )
        )
        wall = time.monotonic() - start
        recording = RecordingTransport.recording_cpu_s - recording_before
        total_cpu = _round_cpu_s(worker_pids) - cpu_before - recording
    finally:
        executor.shutdown(wait=True)
    w = np.asarray(weights)
    expected = (np.stack(updates).astype(np.float64) * w[:, None]).sum(axis=0) / w.sum()
    error = float(np.max(np.abs(results[0].average - expected)))
    print(f"max |secagg - plaintext| = {error:.3g}", file=sys.stderr)
    return RoundRun(list(results), wall, members, total_cpu, recording, error)


def silence_native_stdout_and_import(_: int) -> int:
    silence_native_stdout()
    return os.getpid()


def replay_aggregator(
    record: Path, keys_file: Path, n_params: int, params: SecAggParams
) -> dict[str, float]:
    """A's path in a fresh process and HE worker: its peak RSS is A's footprint.

    A holds its own update and spools its own masked contribution as plaintext words
    from its worker, segment by segment; it checks each member's recorded UPLOAD chunks
    and appends them to that member's spool file (spool.py; as _Session._collect_uploads,
    so the order the chunks come in no longer changes what A holds); then it makes and
    signs the SUM for D one chunk at a time from the spool (spool.sum_window, as
    _Session._stream_sum). The spool lies in a temporary directory; the page cache it
    fills is not A's RSS.
    """
    keys = {m: bytes.fromhex(h) for m, h in json.loads(keys_file.read_text()).items()}
    verify = verifier_from_keys(keys)
    binding = RoundBinding("bench-fed", "bench-group", 1)
    me = record.name
    context_file = next(record.glob(f"{int(Step.CONTEXT)}-*.msg"))
    context_message = decode_message(context_file.read_bytes(), binding, me, verify)
    context = ContextPayload.decode(context_message.payload)
    load_public_context(context.context)
    slots = -(-n_params // params.fields_per_slot) + 1
    accumulator = CiphertextAccumulator(context.context, slots, params.slot_count)
    per_chunk = params.stream_chunk_ciphertexts
    n_chunks = stream_chunk_count(slots, params.slot_count, per_chunk)
    start = time.process_time()
    own = _role_update(4, n_params)
    masks = tuple((secrets.token_bytes(32), 1 if i % 2 else -1) for i in range(4))
    job = EncryptJob(context.context, own, 1000.0, params, 4, masks, 16)
    with tempfile.TemporaryDirectory(prefix="secagg-bench-spool-") as tmp:
        spool = RoundSpool(Path(tmp), "r1")
        pool = make_executor(1)
        try:
            rows = spool.own_rows(accumulator.plain_row_words)
            for segment in segment_jobs(job):
                plain = pool.submit(plain_addend, segment).result()
                rows.write(segment.offset_slots // params.slot_count, plain.rows)
                del plain
            worker_mb = pool.submit(_worker_peak_rss_mb).result()
        finally:
            pool.shutdown(wait=True)
        del job
        senders = sorted(
            {
                path.name.split("-", 1)[1].rsplit("-", 1)[0]
                for path in record.glob(f"{int(Step.UPLOAD)}-*.msg")
            }
        )
        for sender in senders:  # as _Session._collect_uploads: checked, then spooled
            for path in sorted(record.glob(f"{int(Step.UPLOAD)}-{sender}-*.msg")):
                message = decode_message(path.read_bytes(), binding, me, verify)
                index, count, body = read_prefix(message.payload)
                if count != n_chunks:
                    raise SystemExit(f"{path.name}: {count} chunks, expected {n_chunks}")
                want = chunk_ciphertexts(index, slots, params.slot_count, per_chunk)
                part = UploadPayload.decode_chunk(body, want)
                accumulator.check(part.chunks, index * per_chunk)
                spool.append(sender, index, part.chunks)
                del message, body, part
        spool_bytes = float(sum(path.stat().st_size for path in spool.paths()))
        # what A sends D: the sum, made and signed one SUM chunk at a time from the spool
        signer = Ed25519Signer.generate(me)
        sum_bytes = 0.0
        try:
            for index in range(n_chunks):
                first = index * per_chunk
                stop = first + chunk_ciphertexts(index, slots, params.slot_count, per_chunk)
                window = sum_window(accumulator, spool, index, first, stop, senders, True)
                body = SumPayload(bytes(32), slots, window.serialise_range(first, stop)).encode()
                del window
                payload = add_prefix(index, n_chunks, body)
                del body
                message = encode_message(signer, binding, Step.SUM, "peer-d", bytes(32), payload)
                sum_bytes += len(payload)
                del payload, message
        finally:
            spool.close()
    del accumulator
    return {
        "peak_rss_mb": _own_peak_rss_mb(),
        "worker_peak_rss_mb": worker_mb,
        "cpu_s_excluding_worker": time.process_time() - start,
        "sum_bytes": sum_bytes,
        "spool_bytes": spool_bytes,
    }


def _worker_peak_rss_mb() -> float:
    """Runs in the HE worker: its own high-water mark."""
    return _own_peak_rss_mb()


def replay_member(n_params: int, k: int, params: SecAggParams) -> dict[str, float]:
    """An ordinary member's upload path in a fresh process and a fresh HE worker.

    The round benchmark runs all k members in one process, so no member's footprint can
    be read there.  This replays what one member holds: its update, the EncryptJob it
    sends to its worker (k masks), the ciphertexts it gets back (two segments at most)
    and one signed UPLOAD chunk at a time.  Reports this process's and the worker's VmHWM
    separately, as a daemon and its HE worker are separate processes.
    """
    from fedswarm.secagg.he import create_context, encrypt_contribution

    keys = create_context(params)
    update = _role_update(3, n_params)
    masks = tuple((secrets.token_bytes(32), 1 if i % 2 else -1) for i in range(k))
    signer = Ed25519Signer.generate("peer-00")
    binding = RoundBinding("bench-fed", "bench-group", 1)
    job = EncryptJob(keys.public_context, update, 1000.0, params, k, masks, 16)
    pool = make_executor(1)
    try:
        pool.submit(silence_native_stdout_and_import, 0).result()
        baseline_worker_mb = pool.submit(_worker_peak_rss_mb).result()
        _reset_peak_rss()  # D's key generation stood in for here; the update stays counted
        start = time.process_time()
        n_slots = -(-n_params // params.fields_per_slot) + 1
        per_chunk = params.stream_chunk_ciphertexts
        n_chunks = stream_chunk_count(n_slots, params.slot_count, per_chunk)
        upload_bytes = 0

        def send(index: int, ciphertexts: list[bytes]) -> int:
            body = UploadPayload(("peer-00",), n_slots, ciphertexts).encode()
            payload = add_prefix(index, n_chunks, body)
            del body
            return len(encode_message(signer, binding, Step.UPLOAD, "peer-01", bytes(32), payload))

        # as _Session._stream_upload: the next segment encrypts while this one is sent
        segments = segment_jobs(job)
        pending_job = pool.submit(encrypt_contribution, segments[0])
        pending: list[bytes] = []
        index = 0
        for i in range(len(segments)):
            output = pending_job.result()
            if i + 1 < len(segments):
                pending_job = pool.submit(encrypt_contribution, segments[i + 1])
            pending.extend(output.chunks)
            del output
            while len(pending) >= per_chunk and index < n_chunks - 1:
                upload_bytes += send(index, pending[:per_chunk])
                del pending[:per_chunk]
                index += 1
        upload_bytes += send(index, pending)
        del pending, segments
        worker_mb = pool.submit(_worker_peak_rss_mb).result()
    finally:
        pool.shutdown(wait=True)
    return {
        "peak_rss_mb": _own_peak_rss_mb(),
        "worker_peak_rss_mb": worker_mb,
        "worker_idle_rss_mb": baseline_worker_mb,
        "cpu_s_excluding_worker": time.process_time() - start,
        "upload_bytes": float(upload_bytes),
    }


def replay_decryptor(n_params: int, k: int, params: SecAggParams) -> dict[str, float]:
    """D's path in a fresh process and HE worker, from SUM chunks to k - 1 RESULT streams.

    The round benchmark's D shares its process with every member. This replays what D
    holds: its update, its own masked vector (mask job), each received SUM chunk (an
    encryption of a masked vector made in D's worker beforehand and kept on disk, so D's
    process holds one chunk at a time, as from the network) decrypted as it arrives into
    its own vector, then each segment unmasked, the weight slot's first, and sent as a
    RESULT chunk signed for k - 1 members one at a time (as _Session._publish_result).
    """
    from fedswarm.secagg.chunks import chunk_slots, result_chunk_values
    from fedswarm.secagg.he import (
        add_own_mod_p,
        create_context,
        encrypt_contribution,
        mask_contribution,
    )
    from fedswarm.secagg.payloads import ResultPayload
    from fedswarm.secagg.stream_decrypt import (
        SumChunkJob,
        UnmaskJob,
        decrypt_sum_chunk,
        unmask_segment,
    )

    keys = create_context(params)
    update = _role_update(5, n_params)
    masks = tuple((secrets.token_bytes(32), 1) for _ in range(k))
    signer = Ed25519Signer.generate("peer-d")
    binding = RoundBinding("bench-fed", "bench-group", 1)
    verify = verifier_from_keys({"peer-d": signer.verify_key})
    job = EncryptJob(keys.public_context, update, 1000.0, params, k, masks, 16)
    grid = QuantisationGrid.for_group(params, k, 16)
    n_slots = -(-n_params // params.fields_per_slot) + 1
    per_chunk = params.stream_chunk_ciphertexts
    n_chunks = stream_chunk_count(n_slots, params.slot_count, per_chunk)
    pool = make_executor(1)
    with tempfile.TemporaryDirectory(prefix="secagg-bench-sum-") as tmp:
        chunk_files = [Path(tmp) / f"sum-{i:05d}.msg" for i in range(n_chunks)]
        try:
            pool.submit(silence_native_stdout_and_import, 0).result()
            # stands in for what the members and A did, written to disk chunk by chunk
            pending: list[bytes] = []
            written = 0

            def write(ciphertexts: list[bytes]) -> None:
                body = SumPayload(bytes(32), n_slots, ciphertexts).encode()
                payload = add_prefix(written, n_chunks, body)
                chunk_files[written].write_bytes(
                    encode_message(signer, binding, Step.SUM, "peer-d", bytes(32), payload)
                )

            for segment in segment_jobs(job):
                pending.extend(pool.submit(encrypt_contribution, segment).result().chunks)
                while len(pending) >= per_chunk and written < n_chunks - 1:
                    write(pending[:per_chunk])
                    del pending[:per_chunk]
                    written += 1
            write(pending)
            del pending
            _reset_peak_rss()  # what came before stands in for the members and A, not D
            start = time.process_time()
            own = np.empty(n_slots, dtype=np.int64)
            filled = 0
            for segment in segment_jobs(job):  # as _Session._own_masked does
                part = pool.submit(mask_contribution, segment).result().values
                own[filled : filled + part.size] = part
                filled += part.size
                del part
            for index, path in enumerate(chunk_files):  # as _Session._receive_sum
                received = decode_message(path.read_bytes(), binding, "peer-d", verify)
                _, _, body = read_prefix(received.payload)
                want = chunk_ciphertexts(index, n_slots, params.slot_count, per_chunk)
                part_sum = SumPayload.decode_chunk(body, want)
                first, stop = chunk_slots(index, n_slots, params.slot_count, per_chunk)
                chunk_job = SumChunkJob(
                    keys.secret_context,
                    [bytes(c) for c in part_sum.chunks],
                    stop - first,
                    grid.plain_modulus,
                )
                del received, body, part_sum
                values = pool.submit(decrypt_sum_chunk, chunk_job).result().values
                add_own_mod_p(own[first:stop], values, grid.plain_modulus)
                del chunk_job, values
            fields = params.fields_per_slot

            def unmask(index: int, units: int | None) -> Any:
                first, stop = chunk_slots(index, n_slots, params.slot_count, per_chunk)
                count = result_chunk_values(
                    index, n_params, n_slots, params.slot_count, per_chunk, fields
                )
                # the "sum" and D's own vector each carry every mask once: remove both
                segment = UnmaskJob(
                    own[first:stop], first, params, k, masks + masks, 16, 0, count, units
                )
                return pool.submit(unmask_segment, segment).result()

            def publish(index: int, values: np.ndarray, total: float) -> None:
                body = ResultPayload(("peer-d",), (), total, values).encode()
                payload = bytes(add_prefix(index, n_chunks, body))
                for i in range(k - 1):  # one signed copy alive at a time
                    message = encode_message(
                        signer, binding, Step.RESULT, f"peer-{i:02d}", bytes(32), payload
                    )
                    del message

            average = np.empty(n_params, dtype=np.float32)
            last = n_chunks - 1
            tail = unmask(last, None)
            tail_offset = last * per_chunk * params.slot_count * fields
            average[tail_offset:] = tail.average
            for index in range(last):
                output = unmask(index, tail.weight_units)
                offset = index * per_chunk * params.slot_count * fields
                average[offset : offset + output.average.size] = output.average
                publish(index, output.average, tail.total_weight)
                del output
            publish(last, tail.average, tail.total_weight)
            worker_mb = pool.submit(_worker_peak_rss_mb).result()
        finally:
            pool.shutdown(wait=True)
    peak_mb, cpu_s = _own_peak_rss_mb(), time.process_time() - start
    # the stand-in sum averages to update; checked after the peak is read, since
    # average - update is a bench-only temporary the size of the vector
    error = float(np.max(np.abs(average - update)))
    return {
        "peak_rss_mb": peak_mb,
        "worker_peak_rss_mb": worker_mb,
        "cpu_s_excluding_worker": cpu_s,
        "stand_in_error": error,
    }


def _role_update(seed: int, n_params: int) -> np.ndarray:
    """A replayed role's update, uniform in [-0.5, 0.5), made in float32 in place.

    Why: uniform() draws float64 and astype copies, 12 bytes per value on top of the
    update (960 MB at 80 M values) that the replays counted as the role's peak.
    """
    update = np.random.default_rng(seed).random(n_params, dtype=np.float32)
    update -= np.float32(0.5)
    return update


def _reset_peak_rss() -> None:
    """Start VmHWM afresh (Linux: writing 5 to clear_refs), so set-up is not counted."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        print("could not reset the peak RSS: set-up is counted", file=sys.stderr)


def _own_peak_rss_mb() -> float:
    """VmHWM of this process image.  ru_maxrss is not used here: Linux carries the
    forking parent's high-water mark into an exec'd child, which would report the whole
    benchmark's peak instead of the aggregator's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def plaintext_baseline(n_params: int, k: int) -> dict[str, float]:
    """Star-topology fp32 averaging: members send updates to A, A returns the average."""
    rng = np.random.default_rng(1)
    updates = [rng.standard_normal(n_params).astype(np.float32) for _ in range(k)]
    start = time.process_time()
    average = np.mean(np.stack(updates), axis=0).astype(np.float32)
    cpu = time.process_time() - start
    size = average.nbytes
    return {
        "cpu_s_aggregator": cpu,
        "bytes_member_sent": float(size),
        "bytes_member_received": float(size),
        "bytes_aggregator_sent": float(size * (k - 1)),
        "bytes_aggregator_received": float(size * (k - 1)),
        "bytes_per_peer_mean": float(4 * size * (k - 1) / k),
    }


def ckks_job(n_params: int) -> dict[str, float]:
    """One peer's encrypt + serialise under a shared CKKS key (runs in a worker)."""
    import tenseal as ts

    silence_native_stdout()
    context = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=8192,
        coeff_mod_bit_sizes=[60, 40, 40],
        n_threads=1,
    )
    context.global_scale = 2**40
    values = np.random.default_rng(2).standard_normal(n_params)
    slots = 4096
    start = time.process_time()
    total = 0
    for i in range(0, n_params, slots):
        total += len(ts.ckks_vector(context, values[i : i + slots].tolist()).serialize())
    return {"encrypt_cpu_s": time.process_time() - start, "bytes_per_peer": float(total)}


def versions() -> dict[str, str]:
    import cryptography
    import nacl
    import tenseal

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tenseal": tenseal.__version__,
        "pynacl": nacl.__version__,
        "cryptography": cryptography.__version__,
    }


def machine() -> dict[str, Any]:
    cpu = cpu_model()
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=4_000_000)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--protocol", choices=PROTOCOLS, default=PROTOCOL_V3)
    parser.add_argument("--replay-aggregator", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--keys", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--replay-member", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--replay-decryptor", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.replay_decryptor:
        print(json.dumps(replay_decryptor(args.params, args.group, params_for(args.protocol))))
        return 0
    if args.replay_member:
        print(json.dumps(replay_member(args.params, args.group, params_for(args.protocol))))
        return 0
    if args.replay_aggregator is not None:
        replayed = replay_aggregator(
            args.replay_aggregator, args.keys, args.params, params_for(args.protocol)
        )
        print(json.dumps(replayed))
        return 0

    n, k = args.params, args.group
    params = params_for(args.protocol)
    with tempfile.TemporaryDirectory(prefix="secagg-bench-") as tmp:
        workdir = Path(tmp)
        keys_file = workdir / "keys.json"
        run = asyncio.run(_run_round(n, k, params, workdir, keys_file))
        aggregator, decryptor = run.results[0].aggregator, run.results[0].decryptor
        replay = subprocess.run(
            module_command(
                "secagg",
                "--params",
                str(n),
                "--replay-aggregator",
                str(workdir / aggregator),
                "--keys",
                str(keys_file),
                "--protocol",
                params.protocol,
            ),
            env=child_env(),
            check=True,
            capture_output=True,
            text=True,
        )
        a_replay = json.loads(replay.stdout.strip().splitlines()[-1])
    member_replay = _replay(n, k, params, "--replay-member")
    decryptor_replay = _replay(n, k, params, "--replay-decryptor")
    whole_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    plain = plaintext_baseline(n, k)
    pool = make_executor(1)
    try:
        ckks = pool.submit(ckks_job, n).result()
    finally:
        pool.shutdown()

    attributed = sum(r.timings["cpu_s"] for r in run.results)
    unattributed = max(run.total_cpu_s - attributed, 0.0)
    share = unattributed / k
    peers = {
        m: {
            "cpu_s": r.timings["cpu_s"] + share,
            "cpu_s_own": r.timings["cpu_s"],
            "cpu_s_parts": {
                key.removesuffix("_cpu_s"): value
                for key, value in r.timings.items()
                if key.endswith("_cpu_s") and key != "cpu_s"
            },
            "bytes_sent": r.bytes_sent,
            "bytes_received": r.bytes_received,
            "role": "A" if m == aggregator else "D" if m == decryptor else "member",
        }
        for m, r in zip(run.members, run.results, strict=True)
    }
    peer_cpu = max(p["cpu_s"] for p in peers.values())
    mean_bytes = float(np.mean([p["bytes_sent"] + p["bytes_received"] for p in peers.values()]))
    ordinary = [p for p in peers.values() if p["role"] == "member"]
    member_sent = float(np.mean([p["bytes_sent"] for p in ordinary])) if ordinary else 0.0
    member_cpu = max((p["cpu_s"] for p in ordinary), default=0.0)
    grid = QuantisationGrid.for_group(params, k)
    report = {
        "benchmark": "secagg",
        "protocol": params.protocol,
        "params": n,
        "group": k,
        "bfv": {
            "poly_modulus_degree": params.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(params.coeff_mod_bit_sizes),
            "plain_modulus_bits": params.plain_modulus_bits,
            "security_bits": params.security_bits(),
            "fields_per_slot": grid.fields,
            "field_bits": grid.field_bits,
            "signed_level_per_member": grid.level,
        },
        "machine": machine(),
        "versions": versions(),
        "round_wall_s": run.wall_s,
        "max_abs_error": run.max_abs_error,
        "error_bound": run.results[0].error_bound,
        "cpu_accounting": {
            "round_cpu_s_process_and_workers": run.total_cpu_s,
            "attributed_to_peers_s": attributed,
            "unattributed_s": unattributed,
            "unattributed_share_per_peer_s": share,
            "bench_recording_cpu_s_excluded": run.recording_cpu_s,
            "note": "cpu_s = cpu_s_own (member's worker jobs + its event-loop work) "
            "+ an equal share of CPU no member could be charged with (asyncio, pickling "
            "in executor threads)",
        },
        "peers": peers,
        "aggregator": {"peer": aggregator, **peers[aggregator], "replay": a_replay},
        "member_replay": member_replay,
        "decryptor_replay": decryptor_replay,
        "decryptor": {"peer": decryptor, **peers[decryptor]},
        "whole_process_peak_rss_mb": whole_rss,
        "plaintext_fp32": plain,
        "ckks_shared_key": {
            **ckks,
            "bytes_ratio_vs_plain_upload": ckks["bytes_per_peer"] / (4 * n),
        },
        "summary": {
            "peer_cpu_s": peer_cpu,
            "member_cpu_s": member_cpu,
            "aggregator_cpu_s": peers[aggregator]["cpu_s"],
            "decryptor_cpu_s": peers[decryptor]["cpu_s"],
            "max_abs_error": run.max_abs_error,
            "error_bound": run.results[0].error_bound,
            "round_wall_s": run.wall_s,
            "bytes_ratio_vs_plain": mean_bytes / plain["bytes_per_peer_mean"],
            "member_upload_ratio_vs_fp32": member_sent / (4 * n),
            "aggregator_peak_rss_mb": a_replay["peak_rss_mb"],
            "aggregator_worker_peak_rss_mb": a_replay["worker_peak_rss_mb"],
            "member_peak_rss_mb": member_replay["peak_rss_mb"],
            "member_worker_peak_rss_mb": member_replay["worker_peak_rss_mb"],
            "decryptor_peak_rss_mb": decryptor_replay["peak_rss_mb"],
            "decryptor_worker_peak_rss_mb": decryptor_replay["worker_peak_rss_mb"],
            "targets": {
                "peer_cpu_s": TARGET_PEER_CPU_S,
                "bytes_ratio_vs_plain": TARGET_BYTES_RATIO,
                "member_upload_ratio_vs_fp32": TARGET_UPLOAD_RATIO,
                "aggregator_peak_rss_mb": TARGET_A_RSS_MB,
            },
        },
    }
    report["summary"]["targets_met"] = bool(
        peer_cpu <= TARGET_PEER_CPU_S
        and report["summary"]["bytes_ratio_vs_plain"] <= TARGET_BYTES_RATIO
        and report["summary"]["member_upload_ratio_vs_fp32"] <= TARGET_UPLOAD_RATIO
        and a_replay["peak_rss_mb"] <= TARGET_A_RSS_MB
    )
    print_table(report)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text)
    return 0


def print_table(report: dict[str, Any]) -> None:
    n = report["params"]
    mb = 1e6
    print(
        f"secagg {report['protocol']}: {n} params, group of {report['group']}, "
        f"{report['machine']['cpu']} ({report['machine']['cores']} cores)"
    )
    print(f"{'peer':<10}{'role':<8}{'cpu s':>8}{'own s':>8}{'sent MB':>10}{'recv MB':>10}")
    for peer, p in report["peers"].items():
        print(
            f"{peer:<10}{p['role']:<8}{p['cpu_s']:>8.2f}{p['cpu_s_own']:>8.2f}"
            f"{p['bytes_sent'] / mb:>10.1f}"
            f"{p['bytes_received'] / mb:>10.1f}"
        )
    s = report["summary"]
    a = report["cpu_accounting"]
    print(
        f"round CPU (process + workers) {a['round_cpu_s_process_and_workers']:.1f} s: "
        f"{a['attributed_to_peers_s']:.1f} s charged to peers, "
        f"{a['unattributed_s']:.1f} s shared out evenly"
    )
    print(f"max per-peer CPU      {s['peer_cpu_s']:.2f} s   (target <= {TARGET_PEER_CPU_S})")
    print(
        f"bytes vs plaintext    {s['bytes_ratio_vs_plain']:.2f}x  (target <= {TARGET_BYTES_RATIO})"
    )
    print(
        f"member upload vs fp32 {s['member_upload_ratio_vs_fp32']:.2f}x  "
        f"(target <= {TARGET_UPLOAD_RATIO})"
    )
    print(
        f"CPU member / A / D    {s['member_cpu_s']:.2f} / {s['aggregator_cpu_s']:.2f} / "
        f"{s['decryptor_cpu_s']:.2f} s"
    )
    print(
        f"A peak RSS (replay: own plain add, spooled uploads, SUM) "
        f"{s['aggregator_peak_rss_mb']:.0f} MB "
        f"(target <= {TARGET_A_RSS_MB:.0f})"
    )
    print(
        f"member peak RSS       {s['member_peak_rss_mb']:.0f} MB, its HE worker "
        f"{s['member_worker_peak_rss_mb']:.0f} MB (replay)"
    )
    print(
        f"D peak RSS            {s['decryptor_peak_rss_mb']:.0f} MB, its HE worker "
        f"{s['decryptor_worker_peak_rss_mb']:.0f} MB (replay)"
    )
    print(
        f"whole-process RSS     {report['whole_process_peak_rss_mb']:.0f} MB "
        f"(all {report['group']} peers)"
    )
    c = report["ckks_shared_key"]
    print(
        f"CKKS N=8192 upload    {c['bytes_ratio_vs_plain_upload']:.1f}x fp32, "
        f"encrypt {c['encrypt_cpu_s']:.2f} s CPU"
    )
    print(
        f"max |secure - exact|  {report['max_abs_error']:.2g} "
        f"(bound {report['error_bound']:.2g}, sample-count weights)"
    )
    print(f"round wall time       {report['round_wall_s']:.1f} s")


if __name__ == "__main__":
    raise SystemExit(main())
