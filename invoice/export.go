package invoice

import (
	"embed"
	"encoding/csv"
	"fmt"
	"html/template"
	"io"
	"strconv"
	"time"
)

// csvHeader is the column row of CSV: one row per line, then a subtotal and a total row.
var csvHeader = []string{"invoice_id", "workspace_id", "period_start", "period_end", "status", "currency", "line_no", "kind",
	"description", "service_period_start", "service_period_end", "model", "token_class", "quantity",
	"unit_price_per_million", "discount_percent", "amount"}

// CSV writes the invoice as CSV: a header row, one row per line with the invoice's header
// fields, then a "subtotal" row (exact) and a "total" row (rounded to cents) in the kind
// column. Amounts are exact decimal strings, never floats.
func (inv *Invoice) CSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	head := []string{inv.ID, inv.WorkspaceID, inv.PeriodStart.Format(time.RFC3339), inv.PeriodEnd.Format(time.RFC3339), inv.Status, inv.Currency}
	row := func(rest ...string) error { return cw.Write(append(append([]string{}, head...), rest...)) }
	if err := cw.Write(csvHeader); err != nil {
		return fmt.Errorf("write invoice %s csv: %w", inv.ID, err)
	}
	for _, l := range inv.Lines {
		pct := ""
		if l.Kind == KindDiscount {
			pct = l.DiscountPercent.String()
		}
		if err := row(strconv.Itoa(l.No), l.Kind, l.describe(inv.PeriodStart), l.ServicePeriodStart.Format(time.RFC3339),
			l.ServicePeriodEnd.Format(time.RFC3339), l.Model, l.TokenClass, strconv.FormatUint(l.Quantity, 10),
			l.PerMillion.String(), pct, l.Amount.String()); err != nil {
			return fmt.Errorf("write invoice %s csv: %w", inv.ID, err)
		}
	}
	row("", "subtotal", "Subtotal (exact)", "", "", "", "", "", "", "", inv.Subtotal.String())
	row("", "total", "Total (subtotal rounded to cents, half away from zero)", "", "", "", "", "", "", "", inv.Total.StringFixed(2))
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("write invoice %s csv: %w", inv.ID, err)
	}
	return nil
}

//go:embed invoice.html
var htmlFiles embed.FS

var htmlPage = template.Must(template.New("invoice.html").Funcs(template.FuncMap{
	"date":     func(t time.Time) string { return t.Format("2006-01-02") },
	"month":    func(t time.Time) string { return t.Format("January 2006") },
	"quantity": func(l Line) string { q, _ := l.Shown(); return q },
	"price":    func(l Line) string { _, p := l.Shown(); return p },
}).ParseFS(htmlFiles, "invoice.html"))

// HTML writes the invoice as a printable HTML page: every line amount and the subtotal
// exact, and the total rounded to cents.
func (inv *Invoice) HTML(w io.Writer) error {
	lines := make([]Line, len(inv.Lines))
	for i, l := range inv.Lines {
		l.Description = l.describe(inv.PeriodStart)
		lines[i] = l
	}
	data := struct {
		*Invoice
		Lines []Line
		Total string
	}{inv, lines, inv.Total.StringFixed(2)}
	if err := htmlPage.Execute(w, data); err != nil {
		return fmt.Errorf("render invoice %s: %w", inv.ID, err)
	}
	return nil
}
