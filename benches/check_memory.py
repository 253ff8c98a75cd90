#!/usr/bin/env python3
"""The batch check's memory: resident memory of `bouncer serve` while
`POST /v1/suppressions/check` answers 10,000 addresses, all suppressed
(the largest answer, ~3.9 MB): six checks one after another, then four
rounds of four at once, then 3 s idle.

    python3 benches/check_memory.py target/release/bouncer sqlite
    python3 benches/check_memory.py target/release/bouncer postgres

PostgreSQL: a scratch database on TEST_POSTGRES_URL's server (default
postgres://postgres@127.0.0.1:5432/test), dropped at the end. Ports 18080
and 18081 on 127.0.0.1. Prints VmRSS, RssAnon and VmHWM (the peak) in MiB.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

ROUNDS_AT_ONCE = 4


def main():
    binary, backend = os.path.abspath(sys.argv[1]), sys.argv[2]
    work = tempfile.mkdtemp(prefix="bouncer-check-memory-")
    scratch = None
    if backend == "sqlite":
        database = f"sqlite://{work}/bouncer.db"
    else:
        base = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
        scratch = f"check_memory_{os.getpid()}"
        psql(base, f"CREATE DATABASE {scratch}")
        database = base.rsplit("/", 1)[0] + "/" + scratch
    env = dict(
        os.environ,
        DATABASE_URL=database,
        LISTEN_ADDR="127.0.0.1:18080",
        ADMIN_LISTEN_ADDR="127.0.0.1:18081",
        SNS_TOPIC_ARNS="arn:aws:sns:us-east-1:123456789012:ses-feedback",
        SPOOL_DIR=f"{work}/spool",
        RUST_LOG="warn",
    )
    server = None
    try:
        subprocess.run([binary, "migrate"], env=env, check=True, capture_output=True)
        addresses = [f"user{i:05d}.someone-long-name@example{i % 97}.com" for i in range(10_000)]
        with open(f"{work}/list.csv", "w") as f:
            f.write("email,note\n")
            f.writelines(f"{a},listed for the memory benchmark\n" for a in addresses)
        subprocess.run([binary, "suppressions", "import", f"{work}/list.csv"], env=env,
                       check=True, capture_output=True)
        server = subprocess.Popen([binary, "serve"], env=env, stdout=subprocess.DEVNULL,
                                  stderr=open(f"{work}/serve.log", "w"))
        wait_until_up()
        body = json.dumps({"addresses": addresses}).encode()
        show("idle", server)
        for n in range(6):
            took = check(body)
            show(f"one after another, {n + 1}: {took * 1000:.0f} ms", server)
        for n in range(4):
            threads = [threading.Thread(target=check, args=(body,)) for _ in range(ROUNDS_AT_ONCE)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            show(f"{ROUNDS_AT_ONCE} at once, round {n + 1}", server)
        time.sleep(3)
        show("idle 3 s", server)
    finally:
        if server:
            server.terminate()
            server.wait()
        if scratch:
            psql(base, f"DROP DATABASE IF EXISTS {scratch}")
        shutil.rmtree(work, ignore_errors=True)


def psql(url, sql):
    parts = urllib.parse.urlparse(url)
    subprocess.run(["psql", "-h", parts.hostname, "-p", str(parts.port or 5432), "-U",
                    parts.username or "postgres", "-d", parts.path.lstrip("/"), "-qc", sql],
                   check=True)


def wait_until_up():
    for _ in range(100):
        try:
            urllib.request.urlopen("http://127.0.0.1:18080/healthz", timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    sys.exit("bouncer serve did not answer on 127.0.0.1:18080")


def check(body):
    request = urllib.request.Request("http://127.0.0.1:18081/v1/suppressions/check", data=body,
                                     headers={"Content-Type": "application/json"})
    started = time.time()
    answer = json.load(urllib.request.urlopen(request, timeout=60))
    took = time.time() - started
    if answer["checked"] != 10_000 or len(answer["suppressed"]) != 10_000:
        sys.exit(f"wrong answer: {answer['checked']} checked, {len(answer['suppressed'])} suppressed")
    return took


def show(label, server):
    with open(f"/proc/{server.pid}/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    mib = {k: int(status[k].split()[0]) // 1024 for k in ("VmRSS", "RssAnon", "VmHWM")}
    print(f"{label:<36} resident {mib['VmRSS']:>3} MiB  anonymous {mib['RssAnon']:>3}  peak {mib['VmHWM']:>3}",
          flush=True)


if __name__ == "__main__":
    main()
