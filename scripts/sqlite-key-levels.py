#!/usr/bin/env python3
"""What a first load of random vendor ids writes per asset, by the shape of
the unique key: the question behind schema version 4 (docs/ARCHITECTURE.md,
"Still open").

Inserts N assets with random 32-hex ids in transactions of BATCH into a
fresh WAL database (synchronous NORMAL, 32 MiB page cache, checkpoint every
8,192 pages, as corral's store), and prints, for each tenth of the load,
assets/s and bytes written per asset (wchar of this process: WAL and
checkpoints). Only the asset rows and their unique key are written (no
lookup hashes), so the difference between the variants is the key's cost.

  unique  rows keyed by an integer id, UNIQUE (connection, kind, source_id)
          (schema version 3): a random insert into a text index per asset
  levels  no unique index: a 64-bit hash of the key goes into a small
          table (h, id) and is merged into a large one in hash order every
          MERGE rows; the code looks a key up in both levels to find the row

    python3 scripts/sqlite-key-levels.py unique 1000000 1000
    python3 scripts/sqlite-key-levels.py levels 1000000 1000 30000
"""
import hashlib, os, random, sqlite3, sys, tempfile, time

if len(sys.argv) not in (4, 5) or sys.argv[1] not in ("unique", "levels"):
    sys.exit(__doc__)
variant, N, BATCH = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
MERGE = int(sys.argv[4]) if len(sys.argv) == 5 else 30_000
path = os.path.join(tempfile.mkdtemp(), "levels.db")
c = sqlite3.connect(path, isolation_level=None)
c.execute("PRAGMA journal_mode=WAL")
c.execute("PRAGMA synchronous=NORMAL")
c.execute("PRAGMA cache_size=-32768")
c.execute("PRAGMA wal_autocheckpoint=8192")
unique = ", UNIQUE (connection, kind, source_id)" if variant == "unique" else ""
c.executescript(f"""
CREATE TABLE assets (id INTEGER PRIMARY KEY, connection TEXT NOT NULL, kind TEXT NOT NULL,
  source_id TEXT NOT NULL, key_hash INTEGER, stream TEXT NOT NULL, fields TEXT NOT NULL,
  content_hash TEXT NOT NULL, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL,
  last_sync_id TEXT NOT NULL{unique});
CREATE INDEX assets_stream ON assets (connection, stream);
CREATE TABLE asset_key (h INTEGER NOT NULL, id INTEGER NOT NULL, PRIMARY KEY (h, id)) WITHOUT ROWID;
CREATE TABLE asset_key_recent (h INTEGER NOT NULL, id INTEGER NOT NULL, PRIMARY KEY (h, id)) WITHOUT ROWID;
""")


def key_hash(sid):
    d = hashlib.blake2b(b"s1\x1fdevice\x1f" + sid.encode(), digest_size=8).digest()
    return int.from_bytes(d, "little", signed=True)


def written():
    io = dict(line.split(":") for line in open("/proc/self/io").read().strip().split("\n"))
    return int(io["wchar"])


random.seed(1)
fields = '{"hostname":"' + "x" * 20 + '","os":"Windows 11","pad":"' + "y" * 600 + '"}'
tenth = max(N // 10, 1)
t0, w0, next_id, recent = time.time(), written(), 1, 0
print(f"{variant} N={N} batch={BATCH}" + (f" merge={MERGE}" if variant == "levels" else ""))
for b in range(0, N, BATCH):
    sids = ["%032x" % random.getrandbits(128) for _ in range(min(BATCH, N - b))]
    c.execute("BEGIN IMMEDIATE")
    if variant == "unique":
        c.executemany(
            "INSERT INTO assets (connection, kind, source_id, stream, fields, content_hash, first_seen, last_seen, "
            "last_sync_id) VALUES ('s1', 'device', ?, 'hosts', ?, 'h', 't', 't', 'sync') "
            "ON CONFLICT (connection, kind, source_id) DO UPDATE SET fields = excluded.fields",
            [(s, fields) for s in sids],
        )
    else:
        hashes = [key_hash(s) for s in sids]
        marks = ",".join("?" * len(hashes))
        found = {}
        for table in ("asset_key_recent", "asset_key"):
            q = f"SELECT k.h, a.id, a.source_id FROM {table} k JOIN assets a ON a.id = k.id WHERE k.h IN ({marks})"
            for h, rid, sid in c.execute(q, hashes):
                found[(h, sid)] = rid
        rows, new_keys = [], []
        for s, h in zip(sids, hashes):
            rid = found.get((h, s))
            if rid is None:
                rid, next_id = next_id, next_id + 1
                found[(h, s)] = rid
                new_keys.append((h, rid))
            rows.append((rid, s, h, fields))
        c.executemany(
            "INSERT INTO assets (id, connection, kind, source_id, key_hash, stream, fields, content_hash, "
            "first_seen, last_seen, last_sync_id) VALUES (?, 's1', 'device', ?, ?, 'hosts', ?, 'h', 't', 't', "
            "'sync') ON CONFLICT (id) DO UPDATE SET fields = excluded.fields",
            rows,
        )
        c.executemany("INSERT INTO asset_key_recent (h, id) VALUES (?, ?)", new_keys)
        recent += len(new_keys)
        if recent >= MERGE:
            c.execute("INSERT INTO asset_key (h, id) SELECT h, id FROM asset_key_recent ORDER BY h, id")
            c.execute("DELETE FROM asset_key_recent")
            recent = 0
    c.execute("COMMIT")
    done = b + len(sids)
    if done % tenth == 0 or done == N:
        el, w = time.time() - t0, written() - w0
        print(f"  {done - tenth:>9,}-{done:<9,} {tenth / el:8.0f} assets/s {w / tenth / 1024:6.1f} KiB/asset")
        t0, w0 = time.time(), written()
print(f"  database {os.path.getsize(path) / N:.0f} B/asset")
