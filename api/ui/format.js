// Exact arithmetic and formatting for the usage page. Money arrives as exact decimal
// strings and is added as such (BigInt at a common scale), never as floats, so a total on
// the page is the API's to the last digit. Floats are used only to draw.

const DECIMAL = /^(-?)(\d+)(?:\.(\d+))?$/;

// parseDecimal turns "12.5" into {units: 125n, scale: 1}; it throws on anything else.
export function parseDecimal(s) {
  const m = DECIMAL.exec(String(s));
  if (!m) throw new Error(`not a decimal string: ${JSON.stringify(s)}`);
  const frac = m[3] ?? '';
  const units = BigInt(m[2] + frac);
  return { units: m[1] === '-' ? -units : units, scale: frac.length };
}

function rescale(d, scale) {
  return d.units * 10n ** BigInt(scale - d.scale);
}

// addDecimals adds decimal strings exactly; the result is written as the API writes
// decimals (shopspring/decimal's String): no trailing zeros, no exponent, "0" for zero.
export function addDecimals(...values) {
  const ds = values.map(parseDecimal);
  const scale = Math.max(0, ...ds.map((d) => d.scale));
  let sum = 0n;
  for (const d of ds) sum += rescale(d, scale);
  return formatUnits(sum, scale);
}

function formatUnits(units, scale) {
  const neg = units < 0n;
  let digits = (neg ? -units : units).toString().padStart(scale + 1, '0');
  let int = digits.slice(0, digits.length - scale);
  let frac = digits.slice(digits.length - scale).replace(/0+$/, '');
  if (int === '0' && frac === '') return '0';
  return (neg ? '-' : '') + int + (frac ? '.' + frac : '');
}

// ratio is a/b as a float, for a meter's fill only.
export function ratio(a, b) {
  const x = Number(a), y = Number(b);
  return y > 0 ? Math.min(1, Math.max(0, x / y)) : 0;
}

// toBigInt takes a token count as JSON gives it (a number, exact below 2^53).
export function toBigInt(n) {
  return typeof n === 'bigint' ? n : BigInt(n ?? 0);
}

// formatInt writes an integer with thousands separators: 1234567 → "1,234,567".
export function formatInt(n) {
  const s = toBigInt(n).toString();
  const neg = s.startsWith('-');
  const d = neg ? s.slice(1) : s;
  return (neg ? '-' : '') + d.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

// lineColumns is an invoice line's quantity and unit price as people read them, with their
// units, exactly as the invoice's HTML page shows them (invoice.Line.Shown; the browser
// test holds the two equal): "3,200 tokens" at "2.5 per 1M tokens", a package rate's
// "0.5 per 1,000,000 tokens", a fee's "516 hours" at "20 per month", a discount's
// percentage; "" where the description says it all (commitment, included usage, credit).
export function lineColumns(l) {
  switch (l.kind) {
    case 'discount':
      return ['', `${l.discount_percent} %`];
    case 'fee':
      return [`${formatInt(l.quantity)} hours`, `${l.unit_price_per_million} per month`];
    case 'usage': case 'adjustment': case 'reversal': {
      const quantity = `${formatInt(l.quantity)} tokens`;
      const [kind, size] = (String(l.token_class).split('/')[1] ?? '').split(':');
      if (kind === 'package') return [quantity, `${l.unit_price_per_million} per ${formatInt(size)} tokens`];
      return [quantity, `${l.unit_price_per_million} per 1M tokens`];
    }
  }
  return ['', ''];
}

// planText says which plan a subscription (GET /v1/subscription) has the workspace on now,
// since when, and the next change ahead, if any: "team since 2026-12-10 12:00 UTC", "the
// price book (no plan)", "… · from 2027-01-01 00:00 UTC: the price book".
export function planText(sub, now = Date.now()) {
  const name = (id) => (id ? id : 'the price book (no plan)');
  const changes = [...(sub.changes ?? [])].sort((a, b) => Date.parse(a.effective_from) - Date.parse(b.effective_from));
  const past = changes.filter((c) => Date.parse(c.effective_from) <= now);
  const next = changes.find((c) => Date.parse(c.effective_from) > now);
  const current = past.at(-1);
  let text = current?.plan_id ? `${current.plan_id} since ${isoTime(current.effective_from)}` : name('');
  if (next) text += ` · from ${isoTime(next.effective_from)}: ${name(next.plan_id)}`;
  return text;
}

// compact writes an axis tick: 1200 → "1.2k", 3400000 → "3.4M".
export function compact(v) {
  const a = Math.abs(v);
  if (a >= 1e9) return +(v / 1e9).toPrecision(3) + 'G';
  if (a >= 1e6) return +(v / 1e6).toPrecision(3) + 'M';
  if (a >= 1e3) return +(v / 1e3).toPrecision(3) + 'k';
  return String(+v.toPrecision(3));
}

const pad = (n) => String(n).padStart(2, '0');

// utcDate writes Unix seconds as "2026-12-02"; utcHour as "2026-12-02 14:00".
export function utcDate(sec) {
  const d = new Date(sec * 1000);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
}

export function utcHour(sec) {
  const d = new Date(sec * 1000);
  return `${utcDate(sec)} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
}

// isoDate and isoTime shorten an RFC 3339 time from the API to its UTC day or minute.
export function isoDate(s) {
  return s ? utcDate(Date.parse(s) / 1000) : '';
}

export function isoTime(s) {
  return s ? utcHour(Date.parse(s) / 1000) + ' UTC' : '';
}

// monthName writes an RFC 3339 month start as "December 2026".
export function monthName(s) {
  return new Date(Date.parse(s)).toLocaleString('en-US', { month: 'long', year: 'numeric', timeZone: 'UTC' });
}

const HOUR = 3600, DAY = 86400;

// rangeFor turns a choice of the range control into the query of GET /v1/usage: whole
// UTC buckets that end with the current one. now is a Date; from and to are "YYYY-MM-DD"
// (to inclusive) for a custom range. It throws with a message for the user on a bad one.
export function rangeFor(choice, now, custom = {}) {
  const t = Math.floor(now.getTime() / 1000);
  const endOfHour = (Math.floor(t / HOUR) + 1) * HOUR;
  const endOfDay = (Math.floor(t / DAY) + 1) * DAY;
  switch (choice) {
    case '24h':
      return { start: endOfHour - 24 * HOUR, end: endOfHour, width: '1h' };
    case '7d':
      return { start: endOfDay - 7 * DAY, end: endOfDay, width: '1d' };
    case '30d':
      return { start: endOfDay - 30 * DAY, end: endOfDay, width: '1d' };
    case 'month':
      return { start: Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1) / 1000, end: endOfDay, width: '1d' };
    case 'custom': {
      const from = Date.parse(custom.from + 'T00:00:00Z') / 1000;
      const to = Date.parse(custom.to + 'T00:00:00Z') / 1000;
      if (!Number.isFinite(from) || !Number.isFinite(to)) throw new Error('Choose both days of the custom range.');
      if (to < from) throw new Error('The custom range ends before it starts.');
      const width = custom.width === '1h' ? '1h' : '1d';
      const end = to + DAY;
      if (width === '1h' && end - from > 31 * DAY) throw new Error('Hourly buckets: choose at most 31 days.');
      if (end - from > 366 * DAY) throw new Error('Choose at most 366 days.');
      return { start: from, end, width };
    }
  }
  throw new Error(`unknown range ${choice}`);
}
