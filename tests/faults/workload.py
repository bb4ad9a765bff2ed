#!/usr/bin/python3
"""Fault-matrix workloads: a real NBD client (libnbd) driving `isboot serve`.

Usage: workload.py MODE NBD_URI BACKING_FILE STOP_FILE MAX_SECONDS

MODE is one of
  seq-write-fua    sequential 64 KiB writes with NBD_CMD_FLAG_FUA, 8 in flight, wrapping
  rand-write-flush random writes (4 KiB..64 KiB at 64 KiB-grid offsets), 16 in flight,
                   NBD_CMD_FLUSH after every 32 writes
  rand-read-verify random reads (4 KiB..256 KiB), 16 in flight, each compared with the
                   backing file (which nothing writes during this workload)

It runs until STOP_FILE exists (the test creates it once the fault is over and
traffic flowed again) or MAX_SECONDS pass, drains what is in flight, then for
write modes checks that every acknowledged write is in BACKING_FILE. It prints
one JSON document: counts, the first errors the client saw, lost writes,
read mismatches and the longest request latency.

libnbd is used (not fio) because the check needs to know exactly which writes
the server acknowledged.
"""
import hashlib
import json
import os
import random
import sys
import time

import nbd

CHUNK = 64 * 1024


def main():
    mode, uri, backing, stop_file, max_s = sys.argv[1:6]
    max_s = float(max_s)
    h = nbd.NBD()
    h.connect_uri(uri)
    size = h.get_size()
    rng = random.Random(int.from_bytes(os.urandom(8), "little"))
    chunks = size // CHUNK
    depth = 8 if mode == "seq-write-fua" else 16
    if len(sys.argv) > 6:
        # the row asks for more (or fewer) requests in flight
        depth = int(sys.argv[6])
    # cookie -> (kind, offset, length, digest-or-None, buffer, start)
    inflight = {}
    # chunk -> (length, sha256) of the last acknowledged write
    acked = {}
    # chunks whose last write failed: content undetermined
    uncertain = set()
    busy = set()
    errors = []
    error_count = 0
    ops = 0
    nbytes = 0
    mismatches = 0
    max_latency = 0.0
    writes_since_flush = 0
    seq = 0
    reference = open(backing, "rb") if mode == "rand-read-verify" else None
    t_end = time.monotonic() + max_s
    stopping = False

    def submit():
        nonlocal seq, writes_since_flush
        now = time.monotonic()
        if mode == "seq-write-fua":
            c = seq % chunks
            seq += 1
            if c in busy:
                return False
            data = os.urandom(CHUNK)
            ck = h.aio_pwrite(data, c * CHUNK, flags=nbd.CMD_FLAG_FUA)
            inflight[ck] = ("write", c, CHUNK, hashlib.sha256(data).digest(), data, now)
            busy.add(c)
        elif mode == "rand-write-flush":
            if writes_since_flush >= 32:
                ck = h.aio_flush()
                inflight[ck] = ("flush", -1, 0, None, None, now)
                writes_since_flush = 0
                return True
            c = rng.randrange(chunks)
            if c in busy:
                return False
            length = 4096 * rng.randint(1, CHUNK // 4096)
            data = os.urandom(length)
            ck = h.aio_pwrite(data, c * CHUNK, flags=0)
            inflight[ck] = ("write", c, length, hashlib.sha256(data).digest(), data, now)
            busy.add(c)
            writes_since_flush += 1
        else:
            length = 4096 * rng.randint(1, 64)
            off = 4096 * rng.randrange((size - length) // 4096 + 1)
            buf = nbd.Buffer(length)
            ck = h.aio_pread(buf, off)
            inflight[ck] = ("read", off, length, None, buf, now)
        return True

    while True:
        now = time.monotonic()
        # Past 64 errors the outcome is known: stop early so a failing row is quick.
        if not stopping and (os.path.exists(stop_file) or now > t_end or error_count >= 64):
            stopping = True
        if stopping and not inflight:
            break
        if h.aio_is_dead() or h.aio_is_closed():
            errors.append("connection to the NBD server is dead")
            error_count += 1
            break
        tries = 0
        while not stopping and len(inflight) < depth and tries < 4:
            if not submit():
                tries += 1
        h.poll(100)
        for ck in list(inflight):
            try:
                done = h.aio_command_completed(ck)
                failed = None
            except nbd.Error as e:
                done = True
                failed = str(e)
            if not done:
                continue
            kind, where, length, digest, buf, start = inflight.pop(ck)
            lat = time.monotonic() - start
            max_latency = max(max_latency, lat)
            if kind == "write":
                busy.discard(where)
            if failed is not None:
                error_count += 1
                if len(errors) < 5:
                    errors.append(f"{kind} at {where}: {failed}")
                if kind == "write":
                    uncertain.add(where)
                continue
            ops += 1
            nbytes += length
            if kind == "write":
                acked[where] = (length, digest)
                uncertain.discard(where)
            elif kind == "read":
                reference.seek(where)
                want = reference.read(length)
                if bytes(buf.to_bytearray()) != want:
                    mismatches += 1
                    if len(errors) < 5:
                        errors.append(f"read at {where} len {length}: data differs from the backing file")
    try:
        h.shutdown()
    except nbd.Error:
        pass

    lost = []
    if mode != "rand-read-verify":
        with open(backing, "rb") as f:
            for c, (length, digest) in sorted(acked.items()):
                if c in uncertain:
                    continue
                f.seek(c * CHUNK)
                if hashlib.sha256(f.read(length)).digest() != digest:
                    lost.append(c * CHUNK)
    print(json.dumps({
        "mode": mode,
        "ops": ops,
        "bytes": nbytes,
        "errorCount": error_count,
        "errors": errors,
        "ackedWrites": len(acked),
        "lostWrites": len(lost),
        "lostOffsets": lost[:10],
        "mismatches": mismatches,
        "maxLatencyMs": round(max_latency * 1000),
    }))


if __name__ == "__main__":
    main()
