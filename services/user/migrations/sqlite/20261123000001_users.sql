-- Accounts. Roles live in their own table so a user can hold several.
CREATE TABLE users (
    id              TEXT PRIMARY KEY,
    email           TEXT NOT NULL UNIQUE,
    username        TEXT NOT NULL UNIQUE,
    -- argon2id PHC string; never the password.
    password_hash   TEXT NOT NULL,
    display_name    TEXT NOT NULL,
    location        TEXT NOT NULL DEFAULT '',
    suspended       INTEGER NOT NULL DEFAULT 0,
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL
);

CREATE TABLE user_roles (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role    TEXT NOT NULL CHECK (role IN ('bidder', 'seller', 'auctioneer', 'admin')),
    PRIMARY KEY (user_id, role)
);

-- Interests are catalog category slugs; notifications match new auctions on them.
CREATE TABLE user_interests (
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    category_slug TEXT NOT NULL,
    PRIMARY KEY (user_id, category_slug)
);
