-- syncapi: presence of other servers' users (m.presence EDUs). Their
-- currently_active is what their server said; NULL for our own users,
-- whose currently_active is worked out from last_active_ts.
ALTER TABLE presence ADD COLUMN currently_active BOOLEAN;
