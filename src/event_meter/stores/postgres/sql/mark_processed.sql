-- The markers of a batch, some of which are already stored: a retry, or a
-- competing processor. Applies first COPY the markers under a savepoint (half
-- the server time of this speculative insert) and fall back to this statement
-- only when the COPY hit a unique violation.
INSERT INTO {processed} (namespace, event_name, version, entry_id, created_at)
SELECT %(namespace)s, %(event_name)s, %(version)s, entry_id, %(created_at)s
FROM json_array_elements_text(%(entry_ids)s::json) AS u(entry_id)
ORDER BY entry_id
ON CONFLICT DO NOTHING
