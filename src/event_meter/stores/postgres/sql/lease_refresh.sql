UPDATE {strings}
SET value = (floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint + %(ttl_ms)s)
            || ':' || %(token)s,
    updated_at = now()
WHERE key = %(key)s AND split_part(value, ':', 2) = %(token)s
RETURNING value
