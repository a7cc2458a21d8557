-- Top workspaces by spend: what they were invoiced over the last three months (this month's
-- running draft included, void invoices excluded). invoices is a ReplacingMergeTree:
-- FINAL keeps only the latest version of each invoice.
SELECT
    workspace_id,
    sum(total) AS spend_usd,
    count() AS invoices
FROM invoices FINAL
WHERE status != 'void'
    AND period_start >= toDateTime(toStartOfMonth(today()) - INTERVAL 2 MONTH, 'UTC')
GROUP BY workspace_id
ORDER BY spend_usd DESC, workspace_id
LIMIT 20
