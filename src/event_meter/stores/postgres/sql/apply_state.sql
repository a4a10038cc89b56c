-- Interval state only moves forward: GREATEST of the stored and the new start,
-- where a stored value that is not a plain decimal integer counts as absent.
-- The batch's state is one jsonb object (state key -> started ms).
INSERT INTO {strings} AS s (key, value, updated_at)
SELECT key, value, now()
FROM jsonb_each_text(%(state)s::jsonb) AS u(key, value)
ORDER BY key
ON CONFLICT (key) DO UPDATE SET
  value = greatest(
    CASE WHEN s.value ~ '^-?[0-9]+$' THEN s.value::numeric END,
    EXCLUDED.value::numeric
  )::text,
  updated_at = now()
WHERE CASE WHEN s.value ~ '^-?[0-9]+$' THEN s.value::numeric < EXCLUDED.value::numeric
      ELSE true END
