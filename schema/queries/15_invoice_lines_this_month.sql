-- This month's invoice lines, with their invoice's status. Lines are written before their
-- header, keyed by the header's version: take the lines whose version equals the current
-- header's (invoices FINAL), never all lines of an invoice ID, which include superseded
-- recomputations. kind: usage, adjustment (earlier usage billed late) or discount.
SELECT
    workspace_id,
    invoice_id,
    status,
    line_no,
    kind,
    model,
    token_class,
    quantity,
    usd_per_million,
    amount
FROM (
    SELECT invoice_id, version, workspace_id, status
    FROM invoices FINAL
    WHERE period_start = toDateTime(toStartOfMonth(today()), 'UTC')
) AS headers
ALL INNER JOIN (
    SELECT invoice_id, version, line_no, kind, model, token_class, quantity, usd_per_million, amount
    FROM invoice_items FINAL
) AS lines USING (invoice_id, version)
ORDER BY workspace_id, line_no
