-- One index key's buckets of a report (oldest first, at most the limit) merged
-- by the laws of SPEC section 8, for every field name present: *_min the
-- least, *_max the greatest, every other the sum. Returns the bucket count,
-- the totals as one jsonb object text (the caller's clean_fields decides which
-- names are fields) and whether a total has a fraction.
-- The value expression (a fragment from _queries.py) is the number of one
-- stored value, or NULL. The exact form tests the text against the regex (a
-- value that is not a plain decimal integer is absent). The fast form casts
-- the jsonb value: it fails on a non-number and leaves a fraction visible in
-- the totals, and in both cases the caller runs the exact form instead.
-- The key test guards against a collision of the 64-bit series hash. The
-- lockstep generate_series marks each row's first key (or the one row of an
-- empty object), so the rows are counted in the same pass, without a CTE.
SELECT coalesce(sum(buckets), 0),
  jsonb_object_agg(name, total) FILTER (WHERE total IS NOT NULL)::text,
  coalesce(bool_or(scale(total) > 0), false)
FROM (
  SELECT name, count(first) AS buckets, CASE right(name, 4)
    WHEN '_min' THEN min(value) WHEN '_max' THEN max(value) ELSE sum(value) END AS total
  FROM (
    SELECT name, first, {value} AS value
    FROM (
      SELECT f, jsonb_object_keys(f) AS name, generate_series(1, 1) AS first
      FROM (
        SELECT f FROM (
          SELECT CASE WHEN key = %(head)s || bucket || %(tail)s THEN fields END AS f, bucket
          FROM {rollups} WHERE series = %(series)s
        ) AS candidates
        WHERE f IS NOT NULL
        ORDER BY bucket
        LIMIT %(limit)s
      ) AS scanned
    ) AS pairs
    OFFSET 0  -- evaluate the value once per pair, not once per aggregate
  ) AS numbers
  GROUP BY name
) AS totals
