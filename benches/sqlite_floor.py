"""SQLite's own cost of a bounce storm's batch, without bouncer: the same
tables, indexes and triggers (a database made by `bouncer migrate`), the
same rows (a ~2.2 KB envelope, one event, one volume row, one new
suppression per message, the hour's counters and the rates read), in one
thread with prepared statements, WAL and synchronous=FULL as bouncer runs
it. It is the floor under bouncer's SQLite writer (BENCHMARKS.md, "Where
the CPU goes").

    DATABASE_URL=sqlite:/tmp/floor.db bouncer migrate
    python3 benches/sqlite_floor.py /tmp/floor.db 32 6400   # batch size, messages
"""
import json
import sqlite3
import statistics
import sys
import time

ses = {"notificationType": "Bounce", "bounce": {"feedbackId": "0100017c-" + "a" * 30, "bounceType": "Permanent", "bounceSubType": "General",
       "bouncedRecipients": [{"emailAddress": "user1@example.com", "action": "failed", "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
       "timestamp": "2026-11-25T10:00:00.000Z", "reportingMTA": "dsn; a1-2.smtp-out.amazonses.com"},
       "mail": {"timestamp": "2026-11-25T10:00:00.000Z", "source": "sender@example.com", "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/example.com",
                "sourceIp": "127.0.3.0", "sendingAccountId": "123456789012", "messageId": "0100017c-" + "b" * 40, "destination": ["user1@example.com"],
                "headersTruncated": False,
                "headers": [{"name": "From", "value": "sender@example.com"}, {"name": "To", "value": "user1@example.com"},
                            {"name": "Subject", "value": "Your weekly digest of things"}, {"name": "MIME-Version", "value": "1.0"},
                            {"name": "Content-Type", "value": "multipart/alternative; boundary=\"----=_Part_7307378_1629847660.1516840721503\""}],
                "commonHeaders": {"from": ["sender@example.com"], "to": ["user1@example.com"], "messageId": "<abc@example.com>", "subject": "Your weekly digest of things"}}}
body = json.dumps({"Type": "Notification", "MessageId": "xxx", "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses-feedback", "Message": json.dumps(ses),
                   "Timestamp": "2026-11-25T10:00:00.000Z", "SignatureVersion": "1", "Signature": "A" * 344,
                   "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
                   "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=arn:aws:sns:us-east-1:123456789012:ses-feedback:" + "c" * 36})
c = sqlite3.connect(sys.argv[1], isolation_level=None)
for pragma in ('journal_mode=wal', 'synchronous=full', 'foreign_keys=on'):
    c.execute('pragma ' + pragma)
B, N = int(sys.argv[2]), int(sys.argv[3])
now = '2026-12-03T10:00:00.000Z'
times = []
cpu0, t0 = time.process_time(), time.perf_counter()
k = 0
for b in range(N//B):
    s=time.perf_counter()
    c.execute('BEGIN')
    msgs, evs, sup, vol = [], [], [], []
    for i in range(B):
        k += 1
        mid, em = f'm{k:09d}-{b}', f'storm{k}@example.com'
        msgs.append((mid,'Notification','arn:aws:sns:us-east-1:123456789012:ses-feedback',None,now,now,now,1,0,'applied',body.replace('xxx',mid),None))
        evs.append((f'bounce:{mid}:{em}',mid,'Bounce','notification',f'ses-{mid}',em,f'fb-{mid}','Permanent','General',None,'5.1.1','smtp; 550 5.1.1 user unknown','suppress',now,now))
        sup.append((em,'bounce','Permanent','General',None,'smtp; 550 5.1.1 user unknown',now,now,1,f'ses-{mid}',mid,'sns:arn','x'))
        vol.append((f'ses-{mid}',em,now))
    c.executemany('INSERT INTO sns_messages (message_id,message_type,topic_arn,subject,sns_timestamp,received_at,stored_at,signature_version,via_spool,outcome,body,outcome_detail) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING', msgs)
    c.executemany('INSERT INTO feedback_events (event_key,sns_message_id,event_type,format,ses_message_id,email,feedback_id,bounce_type,bounce_subtype,complaint_feedback_type,status,diagnostic_code,action,occurred_at,received_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING', evs)
    c.executemany('INSERT INTO rate_volume (mail_id,recipient,seen_at) VALUES (?,?,?) ON CONFLICT DO NOTHING', vol)
    c.executemany('INSERT INTO suppressions (email,reason,bounce_type,bounce_subtype,complaint_feedback_type,diagnostic_code,first_seen_at,last_seen_at,event_count,last_ses_message_id,last_sns_message_id,source,note) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (email) DO UPDATE SET event_count=event_count+1', sup)
    c.execute("INSERT INTO rate_buckets (bucket_start,sends,hard_bounces,complaints,delivery_sends) VALUES (?,?,?,0,0) ON CONFLICT (bucket_start) DO UPDATE SET sends=sends+excluded.sends, hard_bounces=hard_bounces+excluded.hard_bounces", ('2026-12-03T10:00:00Z',B,B))
    c.execute('SELECT SUM(sends), SUM(hard_bounces) FROM rate_buckets').fetchall()
    c.execute('COMMIT')
    times.append(time.perf_counter()-s)
el, cpu = time.perf_counter() - t0, time.process_time() - cpu0
print(f'batch {B}: median {statistics.median(times)*1e3:.2f} ms per batch, {statistics.median(times)/B*1e6:.0f} us/msg wall, CPU {cpu/(N//B*B)*1e6:.0f} us/msg, {N//B*B/el:.0f} msg/s')
