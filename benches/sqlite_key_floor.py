"""SQLite's own cost of a feed mix's deliveries, without bouncer: the
tables of `migrations/sqlite` (the schema as `bouncer migrate` makes it),
rows as a delivery writes them (a ~2.2 KB envelope, one event, one counted
send, the streak reset, the hour's counters), batches in one transaction,
WAL and synchronous=NORMAL as the writer's own connection runs it, SNS's
MessageIds random UUIDs as SNS sends them, 20,000 repeat recipients as the
feed mix's. Two choices of schema, to measure a key or an index beside the
other (BENCHMARKS.md, "A dedupe key in time order"):

    python3 benches/sqlite_key_floor.py id   keep 16000 16 100000
    python3 benches/sqlite_key_floor.py time keep 16000 16 100000

key `id`: `sns_messages` keyed by the id alone (the schema before
migration 0013); `time`: by `(sns_timestamp, message_id)` (0013). index
`keep` or `drop`: with or without `feedback_events_email`. Then messages,
batch size, and messages stored first (untimed), so that the indexes are
as large as a lived-in database's. Prints the median time a message of
the timed batches and the process's CPU a message.
"""
import glob
import os
import random
import sqlite3
import statistics
import sys
import time
import uuid

key, email_index = sys.argv[1], sys.argv[2]
N, B, prefill = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
assert key in ('id', 'time') and email_index in ('keep', 'drop')
here = os.path.dirname(os.path.abspath(__file__))
path = f'/tmp/sqlite_key_floor-{key}-{email_index}.db'
for f in glob.glob(path + '*'):
    os.remove(f)
c = sqlite3.connect(path, isolation_level=None)
for pragma in ('journal_mode=wal', 'synchronous=normal', 'temp_store=memory'):
    c.execute('pragma ' + pragma)
for m in sorted(glob.glob(os.path.join(here, '..', 'migrations', 'sqlite', '*.sql'))):
    if key == 'id' and os.path.basename(m) >= '0013':
        continue
    c.executescript(open(m).read())
if email_index == 'drop':
    c.execute('DROP INDEX feedback_events_email')
body = 'x' * 2200
clock = time.time()
k = 0


def batch():
    global k, clock
    msgs, evs, vol, emails = [], [], [], []
    for _ in range(B):
        k += 1
        clock += 0.0002
        now = time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(clock)) + '.%03dZ' % int((clock % 1) * 1000)
        mid, em, ses = str(uuid.uuid4()), f'user{random.randrange(20000)}@example.com', f'0100019a{k:012x}'
        msgs.append((mid, 'Notification', 'arn:aws:sns:us-east-1:123456789012:ses-feedback', None, now, now, now, 1, 0, 'applied', body, None))
        evs.append((f'delivery:{ses}:{em}', mid, 'Delivery', 'event', ses, em, None, None, None, None, None, None, 'reset_soft_bounces', now, now))
        vol.append((ses, em, now))
        emails.append(em)
    start = time.perf_counter()
    c.execute('BEGIN IMMEDIATE')
    c.executemany('INSERT INTO sns_messages (message_id, message_type, topic_arn, subject, sns_timestamp, received_at, stored_at, signature_version, via_spool, outcome, body, outcome_detail) '
                  'VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING', msgs)
    c.executemany('INSERT INTO feedback_events (event_key, sns_message_id, event_type, format, ses_message_id, email, feedback_id, bounce_type, bounce_subtype, complaint_feedback_type, status, diagnostic_code, action, occurred_at, received_at) '
                  'VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING', evs)
    c.executemany('INSERT INTO rate_volume (mail_id, recipient, seen_at) VALUES (?,?,?) ON CONFLICT DO NOTHING', vol)
    c.execute('DELETE FROM soft_bounces WHERE email IN (%s)' % ','.join('?' * B), emails)
    c.execute('INSERT INTO rate_buckets (bucket_start, sends, hard_bounces, complaints, delivery_sends) VALUES (?,?,0,0,?) '
              'ON CONFLICT (bucket_start) DO UPDATE SET sends = sends + excluded.sends, delivery_sends = delivery_sends + excluded.delivery_sends',
              ('2026-12-07T18:00:00.000Z', B, B))
    c.execute('COMMIT')
    if k % 4000 < B:
        # The service checkpoints beside its writer.
        c.execute('pragma wal_checkpoint(PASSIVE)')
    return time.perf_counter() - start


for _ in range(prefill // B):
    batch()
cpu0 = time.process_time()
times = [batch() for _ in range(N // B)]
cpu = time.process_time() - cpu0
print(f'key {key}, feedback_events_email {email_index}, {prefill} stored first: '
      f'median {statistics.median(times) / B * 1e6:.1f} us a message, CPU {cpu / (N // B * B) * 1e6:.1f} us a message', flush=True)
for f in glob.glob(path + '*'):
    os.remove(f)
