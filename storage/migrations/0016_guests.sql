-- userapi: guest accounts (POST /register?kind=guest, when
-- registration.guests is on). A guest has no password and may use only the
-- endpoints the spec opens to guests; registering with the guest's access
-- token and its localpart upgrades it to a full account.
ALTER TABLE accounts ADD COLUMN is_guest BOOLEAN NOT NULL DEFAULT FALSE;
