-- Take the lease unless a live one is held: the upsert overwrites only a lease
-- whose expiry (server clock, ms) has passed or whose value does not parse.
INSERT INTO {strings} AS s (key, value, updated_at)
VALUES (
  %(key)s,
  (floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint + %(ttl_ms)s) || ':' || %(token)s,
  now()
)
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
WHERE CASE WHEN split_part(s.value, ':', 1) ~ '^[0-9]{{1,18}}$'
      THEN split_part(s.value, ':', 1)::bigint
           <= floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint
      ELSE true END
RETURNING value
