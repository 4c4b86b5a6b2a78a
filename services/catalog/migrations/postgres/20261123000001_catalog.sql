-- The category tree. `path` is the ancestors' slugs and the node's own
-- joined by '/', so "this category and everything under it" is a prefix match.
CREATE TABLE categories (
    id        UUID PRIMARY KEY,
    slug      TEXT NOT NULL UNIQUE,
    parent_id UUID REFERENCES categories (id),
    path      TEXT NOT NULL UNIQUE,
    name      TEXT NOT NULL,
    -- Order among siblings.
    position  INTEGER NOT NULL
);

-- Goods a seller can put up for auction.
CREATE TABLE items (
    id            UUID PRIMARY KEY,
    seller_id     UUID NOT NULL,
    category_id   UUID NOT NULL REFERENCES categories (id),
    title         TEXT NOT NULL,
    description   TEXT NOT NULL,
    condition     TEXT NOT NULL CHECK (condition IN ('new', 'like_new', 'used_good', 'used_fair', 'refurbished', 'for_parts')),
    -- Free-form attributes as a JSON object of strings.
    attributes    TEXT NOT NULL DEFAULT '{}',
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE INDEX items_seller ON items (seller_id);
CREATE INDEX items_category ON items (category_id);
