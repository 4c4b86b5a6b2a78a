-- Every leadership term of a shard: the epoch it was given (an etcd
-- revision in a cluster, the next integer on a single node) and the node
-- that won it. One node per epoch: the primary key refuses a second claim.
CREATE TABLE shard_terms (
    shard INTEGER NOT NULL,
    epoch BIGINT NOT NULL,
    node TEXT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    PRIMARY KEY (shard, epoch)
);
