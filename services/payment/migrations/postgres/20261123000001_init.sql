-- The payment service's tables arrive with issue 9; this first migration only
-- marks the schema as owned by the service, so start-up creates and versions it.
CREATE TABLE service_schema_owner (service TEXT PRIMARY KEY);
INSERT INTO service_schema_owner (service) VALUES ('payment');
