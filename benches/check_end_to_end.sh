#!/bin/bash
# A 10,000-address check against 1,000,000 rows of realistic width, end to
# end with curl (median of 7), every address suppressed and one in ten, for
# each binary given, twice, alternated. SQLite; ports 18480-18481.
#   bash benches/check_end_to_end.sh OLD_BINARY NEW_BINARY
W=$(mktemp -d /tmp/bouncer-check-e2e-XXXX)
export DATABASE_URL=sqlite://$W/b.db LISTEN_ADDR=127.0.0.1:18480 ADMIN_LISTEN_ADDR=127.0.0.1:18481 SNS_TOPIC_ARNS=arn:aws:sns:us-east-1:123456789012:ses-feedback SPOOL_PATH=$W/spool RUST_LOG=error
"$1" migrate >/dev/null 2>&1
sqlite3 $W/b.db "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 999999) INSERT INTO suppressions (email, reason, bounce_type, bounce_subtype, diagnostic_code, first_seen_at, last_seen_at, event_count, last_ses_message_id, last_sns_message_id, source) SELECT 'user' || i || '@example.com', 'bounce', 'Permanent', 'General', 'smtp; 550 5.1.1 <user' || i || '@example.com>... User unknown', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', 1, '0100018c-aaaa-bbbb-cccc-' || i, 'b1c2d3e4-aaaa-bbbb-cccc-' || i, 'sns' FROM n ORDER BY (i * 7919) % 1000003"
python3 -c "
import json
print(json.dumps({'addresses':[f'user{i*97}@example.com' for i in range(10000)]}), file=open('$W/all.json','w'))
print(json.dumps({'addresses':[f'user{i*97}@example.com' if i%10==0 else f'nobody{i}@example.net' for i in range(10000)]}), file=open('$W/tenth.json','w'))"
for v in "$@" "$@"; do
  "$v" serve >/dev/null 2>&1 & pid=$!; sleep 1.5
  for f in all tenth; do
    t=$(for k in 1 2 3 4 5 6 7; do curl -s -o /dev/null -w '%{time_total}\n' -H 'Content-Type: application/json' --data-binary @$W/$f.json http://127.0.0.1:18481/v1/suppressions/check; done | sort -n | sed -n 4p)
    echo "$v $f median of 7: $t s"
  done
  kill $pid; wait $pid 2>/dev/null
done
rm -rf $W
