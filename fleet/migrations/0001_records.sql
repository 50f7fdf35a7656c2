-- Every record type in its own table, keyed by the envelope's id (contract §1):
-- a resend or a JetStream redelivery inserts nothing. (store_id, key) is unique
-- too, so a record re-ingested under a new id (a Pi whose outbox was replaced)
-- is not counted twice; the first one stored is kept, as the agent keeps the
-- first version of a key. `data` is the agent's normalised record as JSON; the
-- typed columns are what the fleet view and a chain's reports query.

CREATE TABLE sales (
    id           uuid PRIMARY KEY,
    key          text NOT NULL,
    store_id     text NOT NULL,
    seq          bigint NOT NULL,
    till_id      text NOT NULL,
    receipt_no   bigint NOT NULL,
    kind         text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    total        numeric(14, 2) NOT NULL,
    received_at  timestamptz,
    clock_synced boolean NOT NULL,
    data         jsonb NOT NULL,
    stream_seq   bigint NOT NULL,
    stored_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (store_id, key)
);
CREATE INDEX sales_store_till_receipt ON sales (store_id, till_id, receipt_no);
CREATE INDEX sales_store_occurred ON sales (store_id, occurred_at);

CREATE TABLE stock_movements (
    id           uuid PRIMARY KEY,
    key          text NOT NULL,
    store_id     text NOT NULL,
    seq          bigint NOT NULL,
    till_id      text NOT NULL,
    movement_id  text NOT NULL,
    sku          text NOT NULL,
    delta        numeric(16, 3) NOT NULL,
    reason       text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz,
    clock_synced boolean NOT NULL,
    data         jsonb NOT NULL,
    stream_seq   bigint NOT NULL,
    stored_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (store_id, key)
);
CREATE INDEX stock_movements_store_sku ON stock_movements (store_id, sku);

-- Z-reports are read tolerantly: every typed column may be NULL, the whole
-- record is in `data`, so a Z-report of a newer agent is stored as it comes.
CREATE TABLE z_reports (
    id               uuid PRIMARY KEY,
    key              text NOT NULL,
    store_id         text NOT NULL,
    seq              bigint NOT NULL,
    till_id          text,
    z_no             bigint,
    opened_at        timestamptz,
    closed_at        timestamptz,
    first_receipt_no bigint,
    last_receipt_no  bigint,
    receipt_count    bigint,
    grand_total      numeric(16, 2),
    received_at      timestamptz,
    clock_synced     boolean NOT NULL,
    data             jsonb NOT NULL,
    stream_seq       bigint NOT NULL,
    stored_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (store_id, key)
);

-- A record type this consumer does not know yet: kept whole, by id.
CREATE TABLE other_records (
    id           uuid PRIMARY KEY,
    key          text NOT NULL,
    type         text NOT NULL,
    store_id     text NOT NULL,
    seq          bigint NOT NULL,
    received_at  timestamptz,
    clock_synced boolean NOT NULL,
    data         jsonb NOT NULL,
    stream_seq   bigint NOT NULL,
    stored_at    timestamptz NOT NULL DEFAULT now()
);

-- A message that is not an envelope (bad JSON, a foreign topic): kept for a
-- person to look at, acknowledged, and never in the way of the ones after it.
CREATE TABLE unreadable_messages (
    stream_seq bigint PRIMARY KEY,
    subject    text NOT NULL,
    payload    bytea NOT NULL,
    error      text NOT NULL,
    stored_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per shop: the latest retained status ({prefix}/{store}/status) and
-- what the records say. `since` is when `online` last changed, by the cluster's
-- clock (the stream's timestamp), never the Pi's.
CREATE TABLE shops (
    store_id        text PRIMARY KEY,
    online          boolean,
    since           timestamptz,
    status          jsonb,
    status_at       timestamptz,
    status_seq      bigint NOT NULL DEFAULT 0,
    last_record_at  timestamptz,
    last_sale_at    timestamptz,
    records         bigint NOT NULL DEFAULT 0
);

-- Receipt numbers seen per till, kept as they arrive, so the fleet view
-- counts missing receipts without scanning sales: missing = span - count.
CREATE TABLE tills (
    store_id         text NOT NULL,
    till_id          text NOT NULL,
    first_receipt_no bigint NOT NULL,
    last_receipt_no  bigint NOT NULL,
    receipts         bigint NOT NULL,
    last_sale_at     timestamptz,
    PRIMARY KEY (store_id, till_id)
);
