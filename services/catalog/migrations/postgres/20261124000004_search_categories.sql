-- Category filters inside the full-text index. A keyword search filtered by
-- a category subtree used to intersect the GIN result with a bitmap of the
-- category btree (hundreds of thousands of rows for a top category): most
-- of a search's time at a million listings. Each listing's tsvector now
-- also holds one lexeme per ancestor path ('c/electronics',
-- 'c/electronics/cameras'), so "keyword AND category" is one GIN lookup.
CREATE FUNCTION category_lexemes(path TEXT) RETURNS tsvector
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
AS $$
    SELECT array_to_tsvector(array_agg('c/' || array_to_string((string_to_array(path, '/'))[1:depth], '/')))
    FROM generate_series(1, cardinality(string_to_array(path, '/'))) AS depth
$$;

ALTER TABLE listings DROP COLUMN search_vector;
ALTER TABLE listings ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('english', title), 'A')
    || setweight(to_tsvector('english', attributes_text), 'B')
    || setweight(to_tsvector('english', description), 'C')
    || setweight(category_lexemes(category_path), 'D')
) STORED;
CREATE INDEX listings_search ON listings USING GIN (search_vector);
