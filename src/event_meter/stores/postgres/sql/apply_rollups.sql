-- Merge the batch's rollup deltas, one jsonb array of [key, fields, series,
-- bucket, bucket_end_ms] rows bound as one parameter (no temporary table, no
-- per-row client work), by the laws of SPEC section 8: *_min take the least,
-- *_max the greatest, every other field adds. A stored value that is not a
-- plain decimal integer counts as absent (the delta replaces it). CASE keeps
-- each ::numeric cast behind its regex test. Rows go in key order so
-- concurrent applies lock rows in the same order.
INSERT INTO {rollups} AS r (key, fields, series, bucket, bucket_end_ms, updated_at)
SELECT e ->> 0, e -> 1, (e ->> 2)::bigint, e ->> 3, (e ->> 4)::bigint, now()
FROM jsonb_array_elements(%(rows)s::jsonb) AS staged(e)
ORDER BY (e ->> 0) COLLATE "C"
ON CONFLICT (key) DO UPDATE SET
  fields = r.fields || coalesce((
    SELECT jsonb_object_agg(d.name, CASE
      WHEN coalesce(r.fields ->> d.name, '') !~ '^-?[0-9]+$' THEN d.value::numeric
      WHEN right(d.name, 4) = '_min' THEN least((r.fields ->> d.name)::numeric, d.value::numeric)
      WHEN right(d.name, 4) = '_max' THEN greatest((r.fields ->> d.name)::numeric, d.value::numeric)
      ELSE (r.fields ->> d.name)::numeric + d.value::numeric
    END)
    FROM jsonb_each_text(EXCLUDED.fields) AS d(name, value)
  ), '{{}}'::jsonb),
  updated_at = now()
