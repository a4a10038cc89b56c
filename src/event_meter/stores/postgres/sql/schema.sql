-- event-meter rollup store schema (SPEC section 11). Idempotent.
-- The rollups table adds three columns, written once on insert: series (a
-- 64-bit hash of "<report>:<granularity>:<index key>", the part of key without
-- the bucket), bucket and bucket_end_ms. (series, bucket) makes one index key's
-- buckets of a report one narrow btree range (reads, scans, summaries); key
-- ranges serve cleanup and the index keys of a bucket. key and bucket compare
-- bytewise (COLLATE "C"), as text_pattern_ops does. fillfactor 70 leaves room
-- on each page so merging into an existing rollup is a HOT update.
CREATE TABLE IF NOT EXISTS {rollups} (
  key text COLLATE "C" PRIMARY KEY,
  fields jsonb NOT NULL DEFAULT '{{}}'::jsonb,
  updated_at timestamptz NOT NULL DEFAULT now(),
  series bigint NOT NULL,
  bucket text COLLATE "C" NOT NULL,
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
CREATE INDEX IF NOT EXISTS {rollups_series_idx} ON {rollups} (series, bucket);
