-- event-meter rollup store schema (SPEC section 11). Idempotent.
-- The rollups table adds report, granularity, index_key, bucket and
-- bucket_end_ms: they restate parts of key (which keeps the SPEC format) so that
-- one index's buckets of a report are one contiguous btree range, and the
-- buckets of a report that ended before a time are another. fillfactor 70
-- leaves room on each page so merging into an existing rollup is a HOT update.
CREATE TABLE IF NOT EXISTS {rollups} (
  key text PRIMARY KEY,
  fields jsonb NOT NULL DEFAULT '{{}}'::jsonb,
  updated_at timestamptz NOT NULL DEFAULT now(),
  report text NOT NULL,
  granularity text NOT NULL,
  index_key text NOT NULL,
  bucket text NOT NULL,
  bucket_end_ms bigint
) WITH (fillfactor = 70);
CREATE TABLE IF NOT EXISTS {strings} (
  key text PRIMARY KEY,
  value text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {processed} (
  namespace text NOT NULL,
  event_name text NOT NULL,
  version integer NOT NULL,
  entry_id text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (namespace, event_name, version, entry_id)
);
CREATE INDEX IF NOT EXISTS {processed_created_at_idx} ON {processed} (created_at);
CREATE INDEX IF NOT EXISTS {rollups_key_prefix_idx} ON {rollups} (key text_pattern_ops);
CREATE INDEX IF NOT EXISTS {strings_key_prefix_idx} ON {strings} (key text_pattern_ops);
CREATE INDEX IF NOT EXISTS {rollups_report_idx}
  ON {rollups} (report, granularity, index_key, bucket);
CREATE INDEX IF NOT EXISTS {rollups_bucket_end_idx} ON {rollups} (report, bucket_end_ms);
