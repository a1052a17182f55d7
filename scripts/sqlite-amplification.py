#!/usr/bin/env python3
"""SQLite write amplification of corral's asset and key tables, in isolation.

Inserts N devices with random ids (as vendors' ids are) and five
correlation keys each, in transactions of BATCH, into a fresh WAL database
shaped like corral's, and prints assets/s, bytes written per asset (wchar)
and database bytes per asset. Variants:

  none     assets only, no key rows
  current  asset_keys keyed by (connection, kind, source_id, type, value)
  rowid    asset_keys keyed by (asset rowid, type, value)

    python3 scripts/sqlite-amplification.py current 100000 1000
"""
import json, os, random, sqlite3, sys, tempfile, time, uuid
if len(sys.argv) != 4 or sys.argv[1] not in ("none", "current", "rowid"):
    sys.exit(__doc__)
N=int(sys.argv[2]); BATCH=int(sys.argv[3]); variant=sys.argv[1]
path=os.path.join(tempfile.mkdtemp(), "amp.db")
for suf in ["","-wal","-shm"]:
    try: os.remove(path+suf)
    except FileNotFoundError: pass
c=sqlite3.connect(path, isolation_level=None)
c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA synchronous=NORMAL"); c.execute("PRAGMA cache_size=-32768")
c.executescript("""
CREATE TABLE assets (connection TEXT NOT NULL, kind TEXT NOT NULL, source_id TEXT NOT NULL, stream TEXT NOT NULL,
 fields TEXT NOT NULL, raw TEXT, content_hash TEXT NOT NULL, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL,
 last_sync_id TEXT NOT NULL, stale_since TEXT, last_change INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (connection, kind, source_id));
CREATE INDEX assets_stream ON assets (connection, stream);
""")
if variant=="current":
    c.executescript("""CREATE TABLE asset_keys (connection TEXT NOT NULL, kind TEXT NOT NULL, source_id TEXT NOT NULL, type TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (connection, kind, source_id, type, value)) WITHOUT ROWID;
    CREATE INDEX asset_keys_value ON asset_keys (type, value);""")
elif variant=="rowid":
    c.executescript("""CREATE TABLE asset_keys (asset INTEGER NOT NULL, type TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (asset, type, value)) WITHOUT ROWID;
    CREATE INDEX asset_keys_value ON asset_keys (type, value);""")
random.seed(1)
fields=json.dumps({"hostname":"x"*20,"os":"Windows 11","ips":["10.0.0.1"],"macs":["aa:bb:cc:dd:ee:ff"],"pad":"y"*600})
t=time.time()
def keys(i,sid):
    return [("serial","SN"+uuid.UUID(int=random.getrandbits(128)).hex[:12]),("mac",":".join("%02x"%random.randrange(256) for _ in range(6))),
            ("hostname","host-"+sid[:10]),("hostname.domain","host-"+sid[:10]+".corp.example.com"),("cloud_instance_id","i-"+sid[:17])]
for b in range(0,N,BATCH):
    c.execute("BEGIN IMMEDIATE")
    rows=[]
    for i in range(b,min(N,b+BATCH)):
        sid=uuid.UUID(int=random.getrandbits(128)).hex
        rows.append((i,sid,keys(i,sid)))
    pend=[]
    for i,sid,ks in rows:
        cur=c.execute("INSERT INTO assets VALUES ('s1','device',?, 'hosts', ?, NULL, 'h', 't','t','sync',NULL,0) RETURNING rowid",(sid,fields))
        rid=cur.fetchone()[0]
        if variant=="current":
            c.executemany("INSERT INTO asset_keys VALUES ('s1','device',?,?,?)",[(sid,k,v) for k,v in ks])
        elif variant=="rowid":
            pend += [(rid,k,v) for k,v in ks]
    if variant=="rowid":
        c.executemany("INSERT INTO asset_keys VALUES (?,?,?)",pend)
    c.execute("COMMIT")
el=time.time()-t
io=dict(l.split(":") for l in open("/proc/self/io").read().strip().split("\n"))
print(f"{variant:14s} N={N} batch={BATCH}: {N/el:8.0f}/s, wchar {int(io['wchar'])/N/1024:6.1f} KiB/asset, db {os.path.getsize(path)/N:6.0f} B/asset")
