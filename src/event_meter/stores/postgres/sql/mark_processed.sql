INSERT INTO {processed} (namespace, event_name, version, entry_id, created_at)
SELECT %(namespace)s, %(event_name)s, %(version)s, entry_id, %(created_at)s
FROM unnest(%(entry_ids)b::text[]) AS u(entry_id)
ORDER BY entry_id
ON CONFLICT DO NOTHING
