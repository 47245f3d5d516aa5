-- Every stored state is one of its enum's names (herd-core: MessageStatus, OutboxState,
-- DeliveryState); services/store's tests check that these lists and the enums agree.
ALTER TABLE messages ADD CONSTRAINT messages_status_check
    CHECK (status IN ('pending', 'answered', 'failed', 'skipped', 'rate_limited', 'ignored', 'blocked', 'cancelled', 'sent'));
ALTER TABLE outbox ADD CONSTRAINT outbox_state_check
    CHECK (state IN ('sending', 'retrying', 'sent', 'failed', 'expired', 'unknown'));
ALTER TABLE deliveries ADD CONSTRAINT deliveries_state_check
    CHECK (state IN ('accepted', 'sent', 'delivered', 'read', 'failed'));
