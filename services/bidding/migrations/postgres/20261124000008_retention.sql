-- What the retention task deletes by age: user activity older than
-- bidding.activity_retention_ms (request_outcomes_age already exists).
CREATE INDEX user_activity_age ON user_activity (at_ms);
