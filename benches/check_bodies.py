#!/usr/bin/env python3
"""Batch checks with large bodies: N checks of 10,000 addresses with long
display names (~1.8 MB bodies) at once, then N bodies stalled one byte
short, against `bouncer serve` with HTTP_BODY_TIMEOUT_MS=3000; prints the
process's resident memory (MiB) and what the stalled ones were answered.

    python3 benches/check_bodies.py target/release/bouncer sqlite 16
    python3 benches/check_bodies.py target/release/bouncer postgres 16

PostgreSQL: a scratch database `check_bodies` on 127.0.0.1:5432 (user
postgres), dropped at the end. Ports 18380-18381.
"""
import json, os, shutil, subprocess, sys, tempfile, threading, time, urllib.request, socket
binary, backend, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
work = tempfile.mkdtemp(prefix="bouncer-check-bodies-")
if backend == "sqlite": db = f"sqlite://{work}/b.db"
else:
    subprocess.run(["psql","-h","127.0.0.1","-U","postgres","-d","test","-qc","DROP DATABASE IF EXISTS check_bodies"]); subprocess.run(["psql","-h","127.0.0.1","-U","postgres","-d","test","-qc","CREATE DATABASE check_bodies"], check=True)
    db = "postgres://postgres@127.0.0.1:5432/check_bodies"
env = dict(os.environ, DATABASE_URL=db, LISTEN_ADDR="127.0.0.1:18380", ADMIN_LISTEN_ADDR="127.0.0.1:18381", SNS_TOPIC_ARNS="arn:aws:sns:us-east-1:123456789012:ses-feedback", SPOOL_PATH=f"{work}/spool", HTTP_BODY_TIMEOUT_MS="3000", RUST_LOG="warn")
subprocess.run([binary, "migrate"], env=env, check=True, capture_output=True)
addrs = [f"user{i:05d}.someone-long-name@example{i%97}.com" for i in range(10000)]
open(f"{work}/l.csv","w").write("email\n" + "".join(a+"\n" for a in addrs))
subprocess.run([binary, "suppressions", "import", f"{work}/l.csv"], env=env, check=True, capture_output=True)
srv = subprocess.Popen([binary, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=open(f"{work}/err","w"))
time.sleep(1.5)
def mem():
    st = dict(l.split(":",1) for l in open(f"/proc/{srv.pid}/status") if ":" in l)
    return {k: int(st[k].split()[0])//1024 for k in ("VmRSS","VmHWM")}
big = json.dumps({"addresses": [f'"A very long display name for the recipient number {i} of the campaign, with a company name and a department and more words to fill" <{a}>' for i,a in enumerate(addrs)]}).encode()
print("body bytes", len(big))
res = []
def one():
    req = urllib.request.Request("http://127.0.0.1:18381/v1/suppressions/check", data=big, headers={"Content-Type":"application/json"})
    t=time.time()
    try:
        a = json.load(urllib.request.urlopen(req, timeout=120)); res.append((len(a["suppressed"]), time.time()-t))
    except Exception as e: res.append((str(e), time.time()-t))
ts=[threading.Thread(target=one) for _ in range(n)]; [t.start() for t in ts]; [t.join() for t in ts]
print(n, "display-name checks at once:", sorted(set(r[0] for r in res)), "max s %.1f" % max(r[1] for r in res), mem())
# stalled bodies: announce 3.6 MB, send all but the last byte, never finish
socks=[]
for _ in range(n):
    s=socket.create_connection(("127.0.0.1",18381)); s.sendall(b"POST /v1/suppressions/check HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(big) + big[:-1]); socks.append(s)
time.sleep(1); print("stalled bodies after 1 s", mem())
time.sleep(3)
s=socks[0]; s.settimeout(10)
try: print("first stalled answer:", s.recv(300).split(b"\r\n")[0])
except Exception as e: print("first stalled:", e)
time.sleep(3); print("after stall timeouts", mem())
[s.close() for s in socks]
srv.terminate(); srv.wait()
if backend!="sqlite": subprocess.run(["psql","-h","127.0.0.1","-U","postgres","-d","test","-qc","DROP DATABASE check_bodies"])
shutil.rmtree(work, ignore_errors=True)
